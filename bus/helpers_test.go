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
	"github.com/seed-c59d106d/pgnotify/internal/testkit"
)

// The helpers below are internal/testkit's, shared with test/'s, durable's
// and cmd/pgnotify's tests, under the names this package's tests use.

// requireServer skips t under -short, which runs only the tests that need no
// server. Without -short TestMain has provided one (or failed the run).
func requireServer(t testing.TB) { t.Helper(); testkit.RequireServer(t) }

// testContext returns a context that ends after 60 s or when t ends,
// whichever comes first.
func testContext(t testing.TB) context.Context { t.Helper(); return testkit.Context(t, 60*time.Second) }

// connect opens a connection to the test server, closed when t ends.
func connect(t testing.TB) *pgx.Conn {
	t.Helper()
	requireServer(t)
	return testkit.Connect(t, connString, nil)
}

// closeConn closes conn, which may be closed or broken already, and waits
// for pgconn's background cleanup to finish, so that the leak check sees no
// goroutine of a closed connection.
func closeConn(t testing.TB, conn *pgx.Conn) {
	t.Helper()
	if err := testkit.CloseConn(conn); err != nil {
		t.Error(err)
	}
}

// adminExec runs sql on a connection of its own, for things a test does
// to the server from outside, such as pg_terminate_backend.
func adminExec(t testing.TB, sql string, args ...any) {
	t.Helper()
	requireServer(t)
	testkit.Exec(t, connString, sql, args...)
}

// waitUntil calls cond every few milliseconds until it returns true, and
// fails t if it has not within timeout. cond runs in the test's goroutine.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitUntil(t, timeout, what, cond)
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
