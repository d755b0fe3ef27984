package pgnotifytest

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestHarness checks the helpers the other tests stand on.
func TestHarness(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)

	conn := connect(t)
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
	var channels []string
	if err := conn.QueryRow(ctx, "SELECT coalesce(array_agg(c), '{}') FROM pg_listening_channels() c").Scan(&channels); err != nil {
		t.Fatal(err)
	}
	if len(channels) != 0 {
		t.Errorf("a fresh connection listens on %q", channels)
	}

	// A connection killed from outside: connectConfig's setting reaches the
	// server, adminExec kills it, waitUntil sees it go, and the cleanup
	// closes a connection that is already broken.
	victim := connectConfig(t, func(cfg *pgx.ConnConfig) {
		cfg.RuntimeParams["application_name"] = "pgnotify-harness"
	})
	pid := victim.PgConn().PID()
	var app string
	if err := conn.QueryRow(ctx, "SELECT application_name FROM pg_stat_activity WHERE pid = $1", pid).Scan(&app); err != nil || app != "pgnotify-harness" {
		t.Fatalf("application_name of the victim = %q, %v", app, err)
	}
	adminExec(t, "SELECT pg_terminate_backend($1)", pid)
	waitUntil(t, 10*time.Second, "the terminated backend to exit", func() bool {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n)
		return err == nil && n == 0
	})
	if _, err := victim.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a terminated connection still works")
	}
	if !victim.IsClosed() {
		t.Error("a terminated connection is not closed after a failed Exec")
	}
}
