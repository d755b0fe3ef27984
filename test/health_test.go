package pgnotifytest

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
)

func TestHealthCheckFindsSilentPeer(t *testing.T) {
	ctx := testContext(t)
	const every, timeout = 100 * time.Millisecond, 200 * time.Millisecond
	silent, fine := listener(t, "hc"), listener(t, "hc")
	m := newManager(t, pgnotify.WithHealthCheck(every, timeout))
	require.NoError(t, m.Add(ctx, silent, fine))

	freeze(t, silent.PgConn().PID())
	start := time.Now()
	ev := untilKind(t, ctx, m, pgnotify.Dead)
	took := time.Since(start)
	t.Logf("silent peer Dead after %v (every %v, timeout %v)", took.Round(time.Millisecond), every, timeout)
	assert.Equal(t, silent, ev.Conn)
	assert.ErrorContains(t, ev.Err, "health check failed")
	// Quiet for at least every and at most twice every, then the timeout.
	assert.Less(t, took, 2*every+timeout+time.Second)
	assert.EqualValues(t, 1, m.Stats().DeathsByCause["health"])

	// The healthy member was pinged too, and carries on.
	assert.Positive(t, m.Stats().HealthChecks)
	notify(t, "hc", "still here")
	got, _ := drainPayloads(t, ctx, m)
	assert.Equal(t, []string{"still here"}, got[fine])
}

func TestHealthCheckSkipsFullMember(t *testing.T) {
	ctx := testContext(t)
	const every, tick = 100 * time.Millisecond, 10 * time.Millisecond
	// clock's quiet member is pinged every tick: its count measures time.
	clock := newManager(t, pgnotify.WithHealthCheck(tick, time.Second))
	require.NoError(t, clock.Add(ctx, listener(t, "clock")))

	full := listener(t, "full")
	m := newManager(t, pgnotify.WithHealthCheck(every, time.Second), pgnotify.WithMaxPending(8))
	require.NoError(t, m.Add(ctx, full))
	// Sent after Add: Add's own round trip would read it all at once.
	const total = 500
	ps := make([]string, total)
	for i := range ps {
		ps[i] = fmt.Sprint(i)
	}
	notify(t, "full", ps...)
	waitUntil(t, 10*time.Second, "a full buffer", func() bool { return m.Stats().Pending >= 8 })
	// Usually exactly 8; on a loaded machine the server may be slow enough
	// to send that the member was quiet for every and a ping pulled the
	// backlog in first, which DESIGN allows for a round trip.
	before := m.Stats()
	// While it waits for the consumer it is not quiet: over more than twice
	// every, no ping (which would pull the rest of the backlog into memory)
	// and nothing more read.
	target := clock.Stats().HealthChecks + uint64(3*every/tick)
	waitUntil(t, 10*time.Second, "the clock's pings", func() bool { return clock.Stats().HealthChecks >= target })
	after := m.Stats()
	assert.Equal(t, before.HealthChecks, after.HealthChecks, "a full member was pinged")
	assert.Equal(t, before.Pending, after.Pending, "a full member kept reading")
	if before.HealthChecks == 0 {
		assert.Equal(t, 8, after.Pending)
	}

	got := collect(t, ctx, m, total)
	assert.Equal(t, ps, got[full])
}

func TestDrainCancelledKeepsRoundTripsAndNotifications(t *testing.T) {
	ctx := testContext(t)
	slow, quick := listener(t, "dc"), listener(t, "dc")
	// Health checks off: the round trip gets the default 30s of its own.
	m := newManager(t, pgnotify.WithHealthCheck(0, 0))
	require.NoError(t, m.Add(ctx, slow, quick))
	pid := slow.PgConn().PID()
	notify(t, "dc", "committed before the pass")
	freeze(t, pid)

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	evs, err := m.Drain(short)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Empty(t, evs)

	// The round trip on the frozen backend was not cancelled (pgx would
	// have closed the connection): thawed, it finishes, and the next pass
	// yields what it brought, with no death.
	require.NoError(t, syscall.Kill(int(pid), syscall.SIGCONT))
	got, other := drainPayloads(t, ctx, m)
	assert.Empty(t, other)
	assert.Equal(t, map[*pgx.Conn][]string{
		slow:  {"committed before the pass"},
		quick: {"committed before the pass"},
	}, got)
	assert.ElementsMatch(t, []*pgx.Conn{slow, quick}, m.Conns())
}
