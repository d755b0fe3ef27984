package pgnotifytest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

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
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		t.Fatalf("parse the test server's connection string: %v", err)
	}
	if mutate != nil {
		mutate(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), connTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect to the test server: %v", err)
	}
	t.Cleanup(func() {
		// A manager made after conn would still own it here (cleanups run
		// last-in first-out): close the test's managers first.
		closeManagers(t)
		closeConn(t, conn)
	})
	return conn
}

// closeConn closes conn, which may be closed or broken already, and waits
// for pgconn's background cleanup to finish, so that the leak check sees no
// goroutine of a closed connection. It fails t if that takes longer than
// connTimeout.
func closeConn(t testing.TB, conn *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), connTimeout)
	defer cancel()
	// Close reports a failed Terminate on a broken connection; the
	// connection is closed either way, which is all a cleanup needs.
	_ = conn.Close(ctx)
	select {
	case <-conn.PgConn().CleanupDone():
	case <-ctx.Done():
		t.Errorf("connection %d: pgconn's cleanup did not finish within %v", conn.PgConn().PID(), connTimeout)
	}
}

// adminExec runs sql on a connection of its own, opened and closed for this
// one statement, for things a test does to the server from outside, such as
// pg_terminate_backend. It fails t on error. Call it from the test's
// goroutine.
func adminExec(t testing.TB, sql string, args ...any) {
	t.Helper()
	requireServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), connTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("adminExec: connect: %v", err)
	}
	defer closeConn(t, conn)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("adminExec %q: %v", sql, err)
	}
}

// waitUntil calls cond every 2 ms until it returns true, and fails t with
// "timed out waiting for <what>" if it has not within timeout. cond runs in
// the caller's goroutine, which must be the test's.
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
