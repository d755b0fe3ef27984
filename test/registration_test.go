package pgnotifytest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
)

// A member whose LISTEN state vanished inside a Do is found by the next
// health check: Dead with ErrNotListening, class not_listening, and the
// reconnect LISTENs again on a new connection, which hears.
func TestRegistrationLostIsDeadThenRecovered(t *testing.T) {
	for _, tc := range []struct{ name, sql string }{
		{"UNLISTEN *", "UNLISTEN *"},
		{"DISCARD ALL", "DISCARD ALL"},
		{"UNLISTEN one", `UNLISTEN "reg_b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			c := listener(t, "reg_a", "reg_b")
			m := newManager(t, pgnotify.WithHealthCheck(20*time.Millisecond, time.Second),
				pgnotify.WithReconnect(pgnotify.Redial, 10*time.Millisecond, 100*time.Millisecond))
			require.NoError(t, m.Add(ctx, c))
			require.NoError(t, m.Do(ctx, c, func(c *pgx.Conn) error {
				_, err := c.PgConn().Exec(ctx, tc.sql).ReadAll()
				return err
			}))

			ev := untilKind(t, ctx, m, pgnotify.Dead)
			assert.Equal(t, c, ev.Conn)
			require.ErrorIs(t, ev.Err, pgnotify.ErrNotListening)
			assert.ErrorContains(t, ev.Err, `"reg_b"`)
			assert.EqualValues(t, 1, m.Stats().DeathsByCause["not_listening"], "%v", m.Stats().DeathsByCause)

			rec := untilKind(t, ctx, m, pgnotify.Recovered)
			assert.Equal(t, c, rec.Replaced)
			notify(t, "reg_b", "heard again")
			ev = untilKind(t, ctx, m, pgnotify.Batch)
			assert.Equal(t, rec.Conn, ev.Conn)
			assert.Equal(t, "heard again", ev.Notifications[0].Payload)
		})
	}
}

// Channels listened inside a Do are not tracked, and the check only asks
// for the tracked ones: a member that listens on more stays live.
func TestRegistrationCheckPassesWithExtraChannels(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "reg_kept")
	m := newManager(t, pgnotify.WithHealthCheck(10*time.Millisecond, time.Second))
	require.NoError(t, m.Add(ctx, c))
	require.NoError(t, m.Do(ctx, c, func(c *pgx.Conn) error { return pgnotify.Listen(ctx, c, "reg_extra") }))
	target := m.Stats().HealthChecks + 5
	waitUntil(t, 10*time.Second, "five health checks", func() bool { return m.Stats().HealthChecks >= target })
	assert.Equal(t, []*pgx.Conn{c}, m.Conns())
	assert.Zero(t, m.Stats().Deaths)
}

// The health check samples the server's notification queue: a session
// that LISTENs and sits in a transaction holds the queue's tail back while
// notifications pile up, and Stats.QueueUsage shows it.
func TestQueueUsageSampled(t *testing.T) {
	ctx := testContext(t)
	m := newManager(t, pgnotify.WithHealthCheck(10*time.Millisecond, time.Second))
	require.NoError(t, m.Add(ctx, listener(t, "queue_quiet")))
	waitUntil(t, 10*time.Second, "a health check", func() bool { return m.Stats().HealthChecks > 0 })

	holder := listener(t, "queue_held")
	_, err := holder.PgConn().Exec(ctx, "BEGIN").ReadAll()
	require.NoError(t, err)
	t.Cleanup(func() { holder.PgConn().Exec(context.Background(), "ROLLBACK").ReadAll() })
	// A queue page is 8 kB; usage counts whole pages of the 8 GB queue.
	payload := fmt.Sprintf("%01000d", 0)
	for range 20 {
		msgs := make([]pgnotify.Message, 100)
		for i := range msgs {
			msgs[i] = pgnotify.Message{Channel: "queue_held", Payload: payload + fmt.Sprint(i)}
		}
		require.NoError(t, pgnotify.Notify(ctx, notifier(t), msgs...))
	}
	waitUntil(t, 10*time.Second, "Stats.QueueUsage above 0", func() bool { return m.Stats().QueueUsage > 0 })
	u := m.Stats().QueueUsage
	t.Logf("queue usage %g with 2 MB held back", u)
	assert.Less(t, u, 0.01)
	assert.Zero(t, m.Stats().Deaths)
}
