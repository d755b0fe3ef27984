package pgnotifytest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
)

// Tests for what Close, Do and Recover promise about each other: Close cuts
// a Do function's query and waits for it, Do returns only once the manager
// has let go of the connection, and Recover returns by its ctx's end.

// queryRunning reports whether the backend pid is running a query
// containing text. It asks the server from a session of its own.
func queryRunning(t testing.TB, pid uint32, text string) bool {
	t.Helper()
	var n int
	require.NoError(t, notifier(t).QueryRow(testContext(t),
		"SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND strpos(query, $2) > 0",
		pid, text).Scan(&n))
	return n > 0
}

// Issue 16 item 1: Close while a Do function runs a query cancels the query,
// waits for the function and closes the member, and returns nil only then.
func TestCloseCutsDoQueryAndWaitsForIt(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "closecut")
	m := pgnotify.NewManager()
	require.NoError(t, m.Add(ctx, c))
	pid := c.PgConn().PID()
	done := make(chan error, 1)
	go func() {
		done <- m.Do(ctx, c, func(c *pgx.Conn) error {
			_, err := c.Exec(context.Background(), "SELECT pg_sleep(20)")
			return err
		})
	}()
	waitUntil(t, 10*time.Second, "the Do function's query to run", func() bool { return queryRunning(t, pid, "pg_sleep") })

	var closeErr error
	within(t, 15*time.Second, "Close while a Do function runs a query", func() { closeErr = m.Close(ctx) })
	require.NoError(t, closeErr)
	// Close returned nil: the member is closed, and reading that races
	// with nothing.
	require.True(t, c.IsClosed(), "Close returned nil with the lent member still open")

	err := receive(t, done, "the Do whose query Close cut")
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr, "the function's query was cancelled: %v", err)
	assert.Equal(t, "57014", pgErr.Code) // query_canceled
	waitBackendGone(t, pid, "the lent connection's backend to go")
}

// Issue 16 item 1: Do returns only once the manager has let go of the
// connection, so a caller that closes its own connection after Close and
// its Do returned does not race with the library (run under -race).
func TestDoReturnsOnceCloseLetGo(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "closelet")
	m := pgnotify.NewManager()
	require.NoError(t, m.Add(ctx, c))
	release := make(chan struct{})
	lent := lend(t, ctx, m, c, release)
	closed := make(chan error, 1)
	go func() { closed <- m.Close(ctx) }()
	waitUntil(t, 10*time.Second, "Close to stop the member", func() bool { return len(m.Conns()) == 0 })
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a Do function still held the connection", err)
	default:
	}
	assert.True(t, backendAlive(t, c.PgConn().PID()), "the function still has the connection")

	close(release)
	require.NoError(t, receive(t, lent, "the Do to return"))
	// Do returned: the waiter is done with c. The caller's own Close
	// must not race with one of the manager's.
	assert.True(t, c.IsClosed(), "the member is closed before Do returns")
	require.NoError(t, c.Close(ctx))
	require.NoError(t, receive(t, closed, "Close to return"))
}

// Issue 16 item 1: Close whose ctx ends while a Do function ignores the
// cancel returns ctx's error by then, leaves the connection to the function
// (no socket closed under it), and the member is closed before that Do
// returns.
func TestCloseExpiringWhileDoHoldsOn(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "closeexp")
	m := pgnotify.NewManager()
	require.NoError(t, m.Add(ctx, c))
	release := make(chan struct{})
	lent := lend(t, ctx, m, c, release)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	var err error
	within(t, 10*time.Second, "Close while a Do function holds on", func() { err = m.Close(short) })
	assert.ErrorIs(t, err, context.DeadlineExceeded, "a member was not closed")
	assert.True(t, backendAlive(t, c.PgConn().PID()), "the function still has the connection")
	close(release)
	require.NoError(t, receive(t, lent, "the Do to return"))
	assert.True(t, c.IsClosed(), "the member is closed before Do returns")
}

// Issue 16 item 2: Recover whose dial ignores its context returns by ctx's
// end; the connection the dial makes later is closed, not added.
func TestRecoverReturnsByCtxWhenDialIgnoresIt(t *testing.T) {
	ctx := testContext(t)
	m, old := deadMember(t, ctx, []string{"recstuck"})
	release := make(chan struct{})
	dialled := make(chan *pgx.Conn, 1)
	dial := func(context.Context, pgnotify.Garbage) (*pgx.Conn, error) {
		<-release // ignores its context
		c, err := pgx.Connect(context.Background(), connString)
		dialled <- c
		return c, err
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	var err error
	within(t, 10*time.Second, "Recover with a dial that ignores its context", func() { err = m.Recover(short, dial) })
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	close(release)
	late := receive(t, dialled, "the released dial")
	require.NotNil(t, late)
	t.Cleanup(func() { closeConn(t, late) })
	waitBackendGone(t, late.PgConn().PID(), "the late connection to be closed, not added")
	assert.Empty(t, m.Conns())
	g := m.Garbage()
	require.Len(t, g, 1, "the dead connection stays in the garbage set")
	assert.Equal(t, old, g[0].Conn)
	// It can be recovered again: the failed Recover released its claim.
	require.NoError(t, m.Recover(ctx, dialer(t, nil)))
	assert.Equal(t, pgnotify.Recovered, next(t, ctx, m).Kind)
}
