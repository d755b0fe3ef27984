package bus_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/bus"
)

// TestStatsConnectedAndPID: Stats says whether the Bus is connected and to
// which backend, before the first Subscribe, while live, and after a
// replacement; a subscription made during the outage gets Recovered
// without Dead.
func TestStatsConnectedAndPID(t *testing.T) {
	ctx := testContext(t)
	d := &busDialer{}
	b := newBus(t, d, bus.WithReconnect(5*time.Millisecond, 50*time.Millisecond))
	st := b.Stats()
	assert.False(t, st.Connected)
	assert.Zero(t, st.PID)

	s := subscribe(t, ctx, b, []string{"stats"})
	st = b.Stats()
	assert.True(t, st.Connected)
	assert.Equal(t, d.lastPID(), st.PID)
	var active bool
	require.NoError(t, connect(t).QueryRow(ctx, "select count(*) = 1 from pg_stat_activity where pid = $1", st.PID).Scan(&active))
	assert.True(t, active, "the PID is the Bus's backend")

	old := st.PID
	adminExec(t, "select pg_terminate_backend($1)", old)
	require.Equal(t, pgnotify.Dead, subNext(t, ctx, s).Kind)
	require.Equal(t, pgnotify.Recovered, subNext(t, ctx, s).Kind)
	st = b.Stats()
	assert.True(t, st.Connected)
	assert.NotEqual(t, old, st.PID)
	assert.Equal(t, d.lastPID(), st.PID)
}
