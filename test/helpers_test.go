package pgnotifytest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify/internal/testkit"
)

// The helpers below are internal/testkit's, shared with durable's and
// cmd/pgnotify's tests, under the names this package's tests use.

// connTimeout bounds opening and closing a connection. It is not the test's
// context: a cleanup must close the connection even after that has expired.
const connTimeout = testkit.ConnTimeout

// requireServer skips t under -short, which runs only the tests that need no
// server. Without -short TestMain has provided one (or failed the run).
func requireServer(t testing.TB) { t.Helper(); testkit.RequireServer(t) }

// testContext returns a context that ends after 60 s or when t ends,
// whichever comes first.
func testContext(t testing.TB) context.Context { t.Helper(); return testkit.Context(t, 60*time.Second) }

// connect opens a connection to the test server, and closes it when t ends;
// see connectConfig.
func connect(t testing.TB) *pgx.Conn {
	t.Helper()
	return connectConfig(t, nil)
}

// connectConfig opens a connection to the test server with its config
// changed by mutate (nil changes nothing). When t ends, closeConn closes it,
// whether or not the test closed it already. Call it from the test's
// goroutine.
func connectConfig(t testing.TB, mutate func(*pgx.ConnConfig)) *pgx.Conn {
	t.Helper()
	requireServer(t)
	conn := testkit.Connect(t, connString, mutate)
	// A manager made after conn would still own it when conn's cleanup runs
	// (cleanups run last-in first-out): close the test's managers first.
	t.Cleanup(func() { closeManagers(t) })
	return conn
}

// closeConn closes conn, which may be closed or broken already, and waits
// for pgconn's background cleanup to finish, so that the leak check sees no
// goroutine of a closed connection. It fails t if that takes longer than
// connTimeout.
func closeConn(t testing.TB, conn *pgx.Conn) {
	t.Helper()
	if err := testkit.CloseConn(conn); err != nil {
		t.Error(err)
	}
}

// adminExec runs sql on a connection of its own, opened and closed for this
// one statement, for things a test does to the server from outside, such as
// pg_terminate_backend. It fails t on error. Call it from the test's
// goroutine.
func adminExec(t testing.TB, sql string, args ...any) {
	t.Helper()
	requireServer(t)
	testkit.Exec(t, connString, sql, args...)
}

// waitUntil calls cond every few milliseconds until it returns true, and
// fails t with "timed out waiting for <what>" if it has not within timeout.
// cond runs in the caller's goroutine, which must be the test's.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitUntil(t, timeout, what, cond)
}
