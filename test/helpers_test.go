package pgnotifytest

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

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

// receiveTimeout bounds receive.
const receiveTimeout = testkit.ReceiveTimeout

// receive returns the next value from ch, and fails t with "timed out
// waiting for <what>" if none comes within receiveTimeout: a test that waits for
// a goroutine's result fails instead of stalling the run. Call it from the
// test's goroutine.
func receive[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	return testkit.Receive(t, ch, what)
}

// within runs fn in a goroutine and fails t if it has not returned within
// d: the property under test is that fn returns at all.
func within(t testing.TB, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// backendAlive reports whether the server still has a backend with pid. It
// asks the server, since a connection the manager owns must not be polled.
func backendAlive(t testing.TB, pid uint32) bool {
	t.Helper()
	var n int
	require.NoError(t, notifier(t).QueryRow(testContext(t), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n))
	return n > 0
}

// waitBackendGone waits until the server has no backend with pid.
func waitBackendGone(t testing.TB, pid uint32, what string) {
	t.Helper()
	waitUntil(t, 10*time.Second, what, func() bool { return !backendAlive(t, pid) })
}

// freeze stops a backend process (SIGSTOP): its socket stays open and
// silent, like a half-open TCP peer. It is thawed at cleanup.
func freeze(t testing.TB, pid uint32) {
	t.Helper()
	if connString != "" && !strings.Contains(connString, "127.0.0.1") {
		t.Skip("freezing a backend needs a local server")
	}
	require.NoError(t, syscall.Kill(int(pid), syscall.SIGSTOP))
	t.Cleanup(func() { syscall.Kill(int(pid), syscall.SIGCONT) })
}

// terminate kills conn's backend with pg_terminate_backend from another
// session.
func terminate(t *testing.T, pid uint32) {
	t.Helper()
	adminExec(t, "SELECT pg_terminate_backend($1)", int64(pid))
}

// connectFrom connects with src's Config() unchanged, the trap of issue 7
// item 4: the config carries src's notification buffer in OnNotification,
// so the new connection delivers its notifications into src. It is closed
// when t ends.
func connectFrom(t testing.TB, src *pgx.Conn) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), connTimeout)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, src.Config())
	require.NoError(t, err)
	t.Cleanup(func() {
		closeManagers(t)
		closeConn(t, c)
	})
	return c
}
