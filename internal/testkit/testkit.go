// Package testkit holds the helpers that the test packages of pgnotify (test/,
// durable, cmd/pgnotify, pgtest) share, so that each has one definition: skip
// without a server under -short, a context per test, waiting for a condition
// with a deadline, and connections closed with pgconn's cleanup awaited (for
// the leak checks). Each package keeps its own short names for them in its
// helpers_test.go. It is imported by test files only.
package testkit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ConnTimeout bounds opening and closing a connection. It is not the test's
// context: a cleanup must close a connection even after that has ended.
const ConnTimeout = 30 * time.Second

// pollEvery is how often WaitUntil checks its condition.
const pollEvery = 5 * time.Millisecond

// RequireServer skips t under -short, which runs only the tests that need no
// server. Without -short the package's TestMain has provided one (or failed
// the run).
func RequireServer(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a PostgreSQL server; run without -short")
	}
}

// Context returns a context that ends after d or when t ends, whichever
// comes first.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitUntil calls cond every few milliseconds until it returns true, and
// fails t with "timed out waiting for <what>" if it has not within timeout.
// cond runs in the caller's goroutine, which must be the test's.
func WaitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (%v)", what, timeout)
		}
		<-tick.C
	}
}

// ReceiveTimeout bounds Receive: long enough for a loaded machine, well
// short of go test's own timeout, so that a test whose result never comes
// fails with what it waited for instead of stalling the run.
const ReceiveTimeout = time.Minute

// Receive returns the next value from ch, or fails t with "timed out
// waiting for <what>" if none comes within ReceiveTimeout. Call it from the
// test's goroutine.
func Receive[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(ReceiveTimeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out waiting for %s (%v)", what, ReceiveTimeout)
		var zero T
		return zero
	}
}

// Connect opens a connection to connString, with its config changed by
// mutate (nil changes nothing), and closes it with CloseConn when t ends,
// whether or not the test closed it already. It fails t if the connection
// cannot be made within ConnTimeout. Call it from the test's goroutine.
func Connect(t testing.TB, connString string, mutate func(*pgx.ConnConfig)) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		t.Fatalf("parse the test server's connection string: %v", err)
	}
	if mutate != nil {
		mutate(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ConnTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect to the test server: %v", err)
	}
	t.Cleanup(func() {
		if err := CloseConn(conn); err != nil {
			t.Error(err)
		}
	})
	return conn
}

// CloseConn closes conn, which may be closed or broken already, and waits
// for pgconn's background cleanup to finish, so that a leak check sees no
// goroutine of a closed connection. It returns an error if that takes longer
// than ConnTimeout.
func CloseConn(conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), ConnTimeout)
	defer cancel()
	// Close reports a failed Terminate on a broken connection; the
	// connection is closed either way, which is all a cleanup needs.
	_ = conn.Close(ctx)
	select {
	case <-conn.PgConn().CleanupDone():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("connection %d: pgconn's cleanup did not finish within %v", conn.PgConn().PID(), ConnTimeout)
	}
}

// Exec runs sql on a connection of its own to connString, opened and closed
// for this one statement, for what a test does to the server from outside,
// such as pg_terminate_backend. It fails t on error. Call it from the test's
// goroutine.
func Exec(t testing.TB, connString, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ConnTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("exec: connect: %v", err)
	}
	defer func() {
		if err := CloseConn(conn); err != nil {
			t.Error(err)
		}
	}()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}
