package pgtmp

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestPgBouncerMissingSaysWhatToInstall(t *testing.T) {
	oldPATH, oldSbin := searchPATH, bouncerSbin
	searchPATH, bouncerSbin = false, filepath.Join(t.TempDir(), "pgbouncer")
	t.Cleanup(func() { searchPATH, bouncerSbin = oldPATH, oldSbin })
	_, err := StartPgBouncer(context.Background(), "postgres://postgres@127.0.0.1:1/postgres", "session")
	if err == nil || !strings.Contains(err.Error(), "apt-get install -y pgbouncer") {
		t.Fatalf("StartPgBouncer with no pgbouncer: %v; want an error that says what to install", err)
	}
	if _, err := StartPgBouncer(context.Background(), "", "pipelined"); err == nil || !strings.Contains(err.Error(), "want session") {
		t.Fatalf("StartPgBouncer with a bad mode: %v", err)
	}
}

// In transaction mode two transactions in a row of one client run in
// different server processes; in session mode, in one.
func TestPgBouncerModes(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	c := start(t)
	for _, tc := range []struct {
		mode string
		same bool
	}{{"transaction", false}, {"session", true}} {
		b, err := StartPgBouncer(ctx, c.ConnString(), tc.mode)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := pgx.Connect(ctx, b.ConnString())
		if err != nil {
			t.Fatal(err)
		}
		var pids []string
		for range 2 {
			rs, err := conn.PgConn().Exec(ctx, "SELECT pg_backend_pid()").ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			pids = append(pids, string(rs[0].Rows[0][0]))
		}
		if same := pids[0] == pids[1]; same != tc.same {
			t.Errorf("%s mode: two transactions ran in server processes %v", tc.mode, pids)
		}
		if pid := strconv.FormatUint(uint64(conn.PgConn().PID()), 10); pid == pids[0] {
			t.Errorf("%s mode: the client was given the server's own PID %s", tc.mode, pid)
		}
		conn.Close(ctx)
		if err := b.Stop(); err != nil {
			t.Error(err)
		}
		if err := b.Stop(); err != nil {
			t.Errorf("a second Stop: %v", err)
		}
	}
}

// A replica streams from its primary, refuses LISTEN, and takes writes
// once promoted.
func TestReplicaAndPromote(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	c := start(t)
	if _, err := connect(t, c).Exec(ctx, "CREATE TABLE before_copy (x int); INSERT INTO before_copy VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	r, err := c.StartReplica(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	})
	rc := connect(t, r)
	if got := queryString(t, rc, "SELECT pg_is_in_recovery()::text"); got != "true" {
		t.Errorf("replica: pg_is_in_recovery() = %s", got)
	}
	if got := queryString(t, rc, "SELECT count(*)::text FROM before_copy"); got != "1" {
		t.Errorf("replica: %s rows copied, want 1", got)
	}
	if _, err := rc.Exec(ctx, "LISTEN x"); err == nil || !strings.Contains(err.Error(), "25006") {
		t.Errorf("LISTEN on the replica: %v; want SQLSTATE 25006", err)
	}
	if err := r.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(t, r).Exec(ctx, "INSERT INTO before_copy VALUES (2)"); err != nil {
		t.Errorf("promoted replica refuses a write: %v", err)
	}
}
