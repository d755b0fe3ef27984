package pgtmp

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// requireServer skips under -short, which runs only what needs no server
// binaries. Without -short, missing binaries fail the test in Start.
func requireServer(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the PostgreSQL server binaries; run without -short")
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func start(t *testing.T, opts ...Option) *Cluster {
	t.Helper()
	c, err := Start(testContext(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func connect(t *testing.T, c *Cluster) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(testContext(t), c.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(testContext(t), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestCluster(t *testing.T) {
	requireServer(t)
	t.Parallel()
	ctx := testContext(t)
	c := start(t)

	if want := "postgres://postgres@127.0.0.1:" + strconv.Itoa(c.Port()) + "/postgres?sslmode=disable"; c.ConnString() != want {
		t.Errorf("ConnString() = %q, want %q", c.ConnString(), want)
	}
	conn := connect(t, c)
	if got := queryString(t, conn, "SELECT 1::text"); got != "1" {
		t.Errorf("SELECT 1 = %q", got)
	}
	for setting, want := range map[string]string{
		"max_connections": "300", "fsync": "off", "server_encoding": "UTF8",
		"data_directory": c.DataDir(),
	} {
		if got := queryString(t, conn, "SHOW "+setting); got != want {
			t.Errorf("SHOW %s = %q, want %q", setting, got, want)
		}
	}

	for _, mode := range []string{"fast", "immediate"} {
		port := c.Port()
		if err := c.Restart(ctx, mode); err != nil {
			t.Fatal(err)
		}
		if c.Port() != port {
			t.Errorf("Restart(%q) moved the port from %d to %d", mode, port, c.Port())
		}
		if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
			t.Errorf("a connection from before Restart(%q) still works", mode)
		}
		conn = connect(t, c)
		if got := queryString(t, conn, "SELECT 1::text"); got != "1" {
			t.Errorf("after Restart(%q): SELECT 1 = %q", mode, got)
		}
	}
	if err := c.Restart(ctx, "smart"); err == nil {
		t.Error(`Restart("smart") succeeded; want an error`)
	}

	dir := filepath.Dir(c.DataDir())
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after Stop, %s: %v; want it gone", dir, err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := c.Restart(ctx, "fast"); err == nil {
		t.Error("Restart after Stop succeeded; want an error")
	}
	if _, err := pgx.Connect(ctx, c.ConnString()); err == nil {
		t.Error("connected after Stop")
	}
}

// TestRemoveStale plays a test binary killed by -timeout: a cluster whose
// owner has exited must be stopped and removed by the next Start.
func TestRemoveStale(t *testing.T) {
	requireServer(t)
	t.Parallel()
	ctx := testContext(t)
	stale := start(t)
	staleDir := filepath.Dir(stale.DataDir())

	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(exited.Process.Pid)
	if err := os.WriteFile(filepath.Join(staleDir, ownerFile), []byte(pid+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	c := start(t, WithMaxConnections(20))
	if _, err := os.Stat(staleDir); !os.IsNotExist(err) {
		t.Errorf("stale cluster's dir %s: %v; want it gone", staleDir, err)
	}
	if conn, err := pgx.Connect(ctx, stale.ConnString()); err == nil {
		conn.Close(ctx)
		t.Error("stale cluster's server still accepts connections")
	}
	if got := queryString(t, connect(t, c), "SHOW max_connections"); got != "20" {
		t.Errorf("WithMaxConnections(20): max_connections = %s", got)
	}
}

func TestFindBinaries(t *testing.T) {
	root := t.TempDir()
	oldPATH, oldGlob := searchPATH, binGlob
	searchPATH, binGlob = false, filepath.Join(root, "*", "bin")
	t.Cleanup(func() { searchPATH, binGlob = oldPATH, oldGlob })

	_, err := findBinaries()
	if err == nil || !strings.Contains(err.Error(), "apt-get install -y postgresql") {
		t.Fatalf("findBinaries with no binaries: %v; want an error that says what to install", err)
	}
	if _, err := Start(context.Background()); err == nil || !strings.Contains(err.Error(), missingBinaries) {
		t.Fatalf("Start with no binaries: %v; want %q", err, missingBinaries)
	}

	for _, v := range []string{"9.6", "16", "15", "17"} {
		bin := filepath.Join(root, v, "bin")
		if err := os.MkdirAll(bin, 0o755); err != nil {
			t.Fatal(err)
		}
		names := []string{"initdb", "pg_ctl"}
		if v == "17" {
			names = names[:1] // no pg_ctl: unusable
		}
		for _, name := range names {
			if err := os.WriteFile(filepath.Join(bin, name), nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, err := findBinaries()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "16", "bin", "pg_ctl"); b.pgCtl != want {
		t.Errorf("findBinaries picked %s, want %s", b.pgCtl, want)
	}
}

// TestEnvURL: DATABASE_URL names the server, and PGNOTIFY_TEST_DATABASE_URL,
// the tests' older name, wins when both are set; FromEnv then starts
// nothing.
func TestEnvURL(t *testing.T) {
	for _, tc := range []struct {
		test, app, want string
	}{
		{"", "", ""},
		{"", "postgres://app", "postgres://app"},
		{"postgres://test", "", "postgres://test"},
		{"postgres://test", "postgres://app", "postgres://test"},
	} {
		t.Setenv(envTestURL, tc.test)
		t.Setenv(envURL, tc.app)
		if got := EnvURL(); got != tc.want {
			t.Errorf("PGNOTIFY_TEST_DATABASE_URL=%q DATABASE_URL=%q: EnvURL() = %q, want %q", tc.test, tc.app, got, tc.want)
		}
		if tc.want == "" {
			continue
		}
		url, stop, err := FromEnv(context.Background())
		if err != nil || url != tc.want {
			t.Errorf("FromEnv() = %q, %v; want %q", url, err, tc.want)
		}
		stop()
	}
}

// TestLogicalReplication checks that the option sets what logical decoding
// needs, and that a cluster without it keeps the server's defaults.
func TestLogicalReplication(t *testing.T) {
	requireServer(t)
	t.Parallel()
	ctx := testContext(t)
	c := start(t, WithLogicalReplication(2*time.Second))
	conn := connect(t, c)
	for setting, want := range map[string]string{
		"wal_level": "logical", "max_replication_slots": "32", "max_wal_senders": "32",
		"wal_sender_timeout": "2s", "synchronous_commit": "on",
	} {
		if got := queryString(t, conn, "SHOW "+setting); got != want {
			t.Errorf("SHOW %s = %q, want %q", setting, got, want)
		}
	}
	// A logical slot can be made and read: what the option is for.
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('pgtmp_test', 'test_decoding')"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_logical_emit_message(true, 'p', 'x')"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_logical_slot_get_changes('pgtmp_test', NULL, NULL) WHERE data LIKE '%message:%'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("decoded %d messages, want 1", n)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_drop_replication_slot('pgtmp_test')"); err != nil {
		t.Fatal(err)
	}

	d := start(t, WithLogicalReplication(0))
	if got := queryString(t, connect(t, d), "SHOW wal_sender_timeout"); got != "1min" {
		t.Errorf("WithLogicalReplication(0): SHOW wal_sender_timeout = %q, want the default 1min", got)
	}
	e := start(t)
	if got := queryString(t, connect(t, e), "SHOW wal_level"); got != "replica" {
		t.Errorf("without the option: SHOW wal_level = %q, want the default replica", got)
	}
}
