package pgnotifytest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// pgbouncer starts a PgBouncer in mode in front of the test server, stopped
// at cleanup (after the connections made through it, which are closed
// first), and returns its connection string.
func pgbouncer(t testing.TB, mode string) string {
	t.Helper()
	requireServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := pgtmp.StartPgBouncer(ctx, connString, mode)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, b.Stop()) })
	return b.ConnString()
}

// connectTo opens a connection to cs, closed at cleanup like connect's.
func connectTo(t testing.TB, cs string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), connTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, cs)
	require.NoError(t, err)
	t.Cleanup(func() {
		closeManagers(t)
		closeConn(t, conn)
	})
	return conn
}

// Behind a transaction-mode pooler, whose next transaction runs on another
// server connection, Listen, Manager.Add of a listening connection and
// Manager.Listen fail with ErrNoSession instead of leaving a deaf session.
func TestPoolerTransactionModeIsNoSession(t *testing.T) {
	ctx := testContext(t)
	cs := pgbouncer(t, "transaction")

	// First, while no server connection of the pool listens: a connection
	// that listens on nothing may be added, but it cannot be made to listen.
	m := newManager(t)
	idle := connectTo(t, cs)
	require.NoError(t, m.Add(ctx, idle))
	err := m.Listen(ctx, idle, "pool_tx")
	require.ErrorIs(t, err, pgnotify.ErrNoSession)
	t.Log(err)
	assert.Equal(t, []*pgx.Conn{idle}, m.Conns(), "a failed Listen leaves the member live")

	err = pgnotify.Listen(ctx, connectTo(t, cs), "pool_tx")
	require.ErrorIs(t, err, pgnotify.ErrNoSession)
	assert.ErrorContains(t, err, "session-mode pool")
	t.Log(err)

	listening := connectTo(t, cs)
	_, err = listening.PgConn().Exec(ctx, `LISTEN "pool_tx2"`).ReadAll()
	require.NoError(t, err)
	err = m.Add(ctx, listening)
	require.ErrorIs(t, err, pgnotify.ErrNoSession)
	t.Log(err)
}

// Behind a session-mode pooler everything works: Listen, Add,
// Manager.Listen, health checks, and notifications arrive.
func TestPoolerSessionModeWorks(t *testing.T) {
	ctx := testContext(t)
	cs := pgbouncer(t, "session")

	a := connectTo(t, cs)
	require.NoError(t, pgnotify.Listen(ctx, a, "pool_s1"))
	b := connectTo(t, cs)
	m := newManager(t, pgnotify.WithHealthCheck(10*time.Millisecond, time.Second))
	require.NoError(t, m.Add(ctx, a, b))
	require.NoError(t, m.Listen(ctx, b, "pool_s2"))
	target := m.Stats().HealthChecks + 4
	waitUntil(t, 10*time.Second, "health checks", func() bool { return m.Stats().HealthChecks >= target })

	notify(t, "pool_s1", "one")
	notify(t, "pool_s2", "two")
	got := collect(t, ctx, m, 2)
	assert.Equal(t, []string{"one"}, got[a])
	assert.Equal(t, []string{"two"}, got[b])
	assert.Zero(t, m.Stats().Deaths)
}

// Behind a session-mode pooler a dead member is replaced: the client sees
// the pooler's backend key, not the server's PID, and the replacement's
// check that it hears its own NOTIFY must not mistake one for the other.
func TestPoolerSessionModeRecovers(t *testing.T) {
	ctx := testContext(t)
	cs := pgbouncer(t, "session")

	c := connectTo(t, cs)
	require.NoError(t, pgnotify.Listen(ctx, c, "pool_rec"))
	m := newManager(t, pgnotify.WithReconnect(pgnotify.Redial, 5*time.Millisecond, 50*time.Millisecond))
	require.NoError(t, m.Add(ctx, c))
	var serverPID uint32
	require.NoError(t, m.Do(ctx, c, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&serverPID)
	}))
	require.NotEqual(t, c.PgConn().PID(), serverPID, "the pooler hands out keys of its own")

	adminExec(t, "SELECT pg_terminate_backend($1)", serverPID)
	untilKind(t, ctx, m, pgnotify.Dead)
	rec := untilKind(t, ctx, m, pgnotify.Recovered)
	notify(t, "pool_rec", "after")
	ev := untilKind(t, ctx, m, pgnotify.Batch)
	assert.Equal(t, rec.Conn, ev.Conn)
	assert.Equal(t, "after", ev.Notifications[0].Payload)
	assert.Zero(t, m.Stats().ReconnectFailures)
}
