package pgtest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/seed-c59d106d/pgnotify/internal/testkit"
	"github.com/seed-c59d106d/pgnotify/pgtest"
)

// backendGone reports whether the server has no backend pid any more.
func backendGone(t testing.TB, admin *pgx.Conn, pid uint32) bool {
	t.Helper()
	var n int
	if err := admin.QueryRow(testContext(t), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n == 0
}

// TestProxyCut: a cut closes the connection on both sides, the server ends
// the backend, and a new connection gets through.
func TestProxyCut(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	url := pgtest.Start(t)
	p := pgtest.NewProxy(t, url)
	admin := connect(t, url)

	conn := connect(t, p.ConnString())
	pid := conn.PgConn().PID()
	p.Cut()
	if err := conn.Ping(ctx); err == nil || !conn.IsClosed() {
		t.Fatalf("Ping after Cut = %v, closed %v: want an error and a closed connection", err, conn.IsClosed())
	}
	testkit.WaitUntil(t, 30*time.Second, "the cut connection's backend to exit", func() bool { return backendGone(t, admin, pid) })

	again := connect(t, p.ConnString())
	if err := again.Ping(ctx); err != nil {
		t.Fatalf("a connection made after Cut: %v", err)
	}
}

// TestProxyBlackhole: a blackhole lets nothing through, on live connections
// and on new ones, loses nothing, and Resume delivers what it held back.
func TestProxyBlackhole(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	url := pgtest.Start(t)
	p := pgtest.NewProxy(t, url)
	sender := connect(t, url)
	listener := connect(t, p.ConnString())
	if _, err := listener.Exec(ctx, "LISTEN held"); err != nil {
		t.Fatal(err)
	}

	p.Blackhole()
	if _, err := sender.Exec(ctx, "NOTIFY held, 'across the blackhole'"); err != nil {
		t.Fatal(err)
	}
	// A notification that does not arrive can only be shown by a deadline:
	// the blackhole's whole point.
	waitCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	n, err := listener.WaitForNotification(waitCtx)
	cancel()
	if !pgconn.Timeout(err) {
		t.Fatalf("WaitForNotification in a blackhole = %v, %v; want a timeout", n, err)
	}
	connectCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	c, err := pgx.Connect(connectCtx, p.ConnString())
	cancel()
	if err == nil {
		c.Close(ctx)
		t.Fatal("a connection made during the blackhole got through")
	}

	// A cancelled wait keeps the connection: it is still there afterwards.
	p.Resume()
	n, err = listener.WaitForNotification(ctx)
	if err != nil || n.Payload != "across the blackhole" {
		t.Fatalf("after Resume: %v, %v; want the notification held back", n, err)
	}
	if err := connect(t, p.ConnString()).Ping(ctx); err != nil {
		t.Fatalf("a connection made after Resume: %v", err)
	}
}

func TestNewProxyRefusesUnixSocket(t *testing.T) {
	msg := failure(t, func(t testing.TB) { pgtest.NewProxy(t, "host=/var/run/postgresql port=5432") })
	if !strings.Contains(msg, "Unix socket") {
		t.Errorf("NewProxy on a socket dir: failure %q, want it to say it needs TCP", msg)
	}
}

// TestProxyConnString: only the host and port change.
func TestProxyConnString(t *testing.T) {
	p := pgtest.NewProxy(t, "postgres://alice:secret@db.example:6432/app?sslmode=disable&application_name=x")
	got := p.ConnString()
	if !strings.HasPrefix(got, "postgres://alice:secret@127.0.0.1:") || !strings.HasSuffix(got, "/app?sslmode=disable&application_name=x") {
		t.Errorf("ConnString = %q, want the same URL on 127.0.0.1", got)
	}
}
