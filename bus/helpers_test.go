package bus_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// The helpers below are those of test/helpers_test.go the Bus's tests
// need, until the project's test helpers live in one internal package.

// connTimeout bounds opening and closing a connection. It is not the test's
// context: a cleanup must close the connection even after that has expired.
const connTimeout = 10 * time.Second

// requireServer skips t under -short, which runs only the tests that need no
// server. Without -short TestMain has provided one (or failed the run).
func requireServer(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a PostgreSQL server; run without -short")
	}
}

// testContext returns a context that ends after 60 s or when t ends,
// whichever comes first.
func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect opens a connection to the test server, closed when t ends.
func connect(t testing.TB) *pgx.Conn {
	t.Helper()
	requireServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), connTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	require.NoError(t, err, "connect to the test server")
	t.Cleanup(func() { closeConn(t, conn) })
	return conn
}

// closeConn closes conn, which may be closed or broken already, and waits
// for pgconn's background cleanup to finish, so that the leak check sees no
// goroutine of a closed connection.
func closeConn(t testing.TB, conn *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), connTimeout)
	defer cancel()
	_ = conn.Close(ctx) // a broken connection is closed either way
	select {
	case <-conn.PgConn().CleanupDone():
	case <-ctx.Done():
		t.Errorf("connection %d: pgconn's cleanup did not finish within %v", conn.PgConn().PID(), connTimeout)
	}
}

// adminExec runs sql on a connection of its own, for things a test does
// to the server from outside, such as pg_terminate_backend.
func adminExec(t testing.TB, sql string, args ...any) {
	t.Helper()
	requireServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), connTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	require.NoError(t, err, "adminExec: connect")
	defer closeConn(t, conn)
	_, err = conn.Exec(ctx, sql, args...)
	require.NoError(t, err, "adminExec %q", sql)
}

// waitUntil calls cond every 2 ms until it returns true, and fails t if it
// has not within timeout. cond runs in the test's goroutine.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (%v)", what, timeout)
		}
		<-tick.C
	}
}

// notifier returns a connection for the test's NOTIFYs, closed when t ends.
func notifier(t testing.TB) *pgx.Conn {
	t.Helper()
	return connect(t)
}

// ownCluster starts a throwaway cluster for t alone (to restart it).
func ownCluster(t testing.TB) *pgtmp.Cluster {
	t.Helper()
	requireServer(t)
	c, err := pgtmp.Start(testContext(t))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, c.Stop()) })
	return c
}

func seq(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func messages(ns []*pgnotify.Notification) []pgnotify.Message {
	out := make([]pgnotify.Message, len(ns))
	for i, n := range ns {
		out[i] = pgnotify.Message{Channel: n.Channel, Payload: n.Payload}
	}
	return out
}
