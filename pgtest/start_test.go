package pgtest_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify/pgtest"
)

// TestStart: the server answers, keeps PostgreSQL's wal_level, and is gone
// once the test that started it has ended.
func TestStart(t *testing.T) {
	requireServer(t)
	var url string
	t.Run("server", func(t *testing.T) {
		url = pgtest.Start(t)
		if !strings.HasPrefix(url, "postgres://postgres@127.0.0.1:") {
			t.Errorf("Start = %q, want a loopback URL for the superuser", url)
		}
		if got := setting(t, url, "wal_level"); got != "replica" {
			t.Errorf("wal_level = %q, want replica", got)
		}
	})
	conn, err := pgx.Connect(testContext(t), url)
	if err == nil {
		conn.Close(context.Background())
		t.Fatal("the server still accepts connections after its test ended")
	}
}

func TestStartWithLogicalReplication(t *testing.T) {
	requireServer(t)
	url := pgtest.Start(t, pgtest.WithLogicalReplication())
	if got := setting(t, url, "wal_level"); got != "logical" {
		t.Errorf("wal_level = %q, want logical", got)
	}
}

// TestStartWithSetting: a setting read only at start and one read on reload
// both hold, and of two for one name the later wins.
func TestStartWithSetting(t *testing.T) {
	requireServer(t)
	url := pgtest.Start(t,
		pgtest.WithSetting("max_connections", "123"),
		pgtest.WithSetting("wal_sender_timeout", "5s"),
		pgtest.WithSetting("wal_sender_timeout", "2s"))
	if got := setting(t, url, "max_connections"); got != "123" {
		t.Errorf("max_connections = %q, want 123", got)
	}
	if got := setting(t, url, "wal_sender_timeout"); got != "2s" {
		t.Errorf("wal_sender_timeout = %q, want 2s", got)
	}
}

func TestStartWithSettingRefused(t *testing.T) {
	requireServer(t)
	for _, c := range []struct{ name, value, want string }{
		{"no_such_setting", "1", "no_such_setting"},
		{"max_connections", "many", "max_connections"},
	} {
		msg := failure(t, func(t testing.TB) { pgtest.Start(t, pgtest.WithSetting(c.name, c.value)) })
		t.Log(msg)
		if !strings.HasPrefix(msg, "pgtest.Start: ") || !strings.Contains(msg, c.want) {
			t.Errorf("WithSetting(%q, %q): failure %q, want one naming the setting", c.name, c.value, msg)
		}
	}
}

// TestStartWithEnv: the first variable set names the server, which is
// checked against the options and never reconfigured; without one set,
// Start starts a server of its own.
func TestStartWithEnv(t *testing.T) {
	requireServer(t)
	existing := pgtest.Start(t)
	t.Setenv("PGTEST_TEST_UNSET", "")
	t.Setenv("PGTEST_TEST_URL", existing)
	t.Setenv("PGTEST_TEST_OTHER", "postgres://nobody@127.0.0.1:1/x")

	if got := pgtest.Start(t, pgtest.WithEnv("PGTEST_TEST_UNSET", "PGTEST_TEST_URL", "PGTEST_TEST_OTHER")); got != existing {
		t.Errorf("Start = %q, want the server PGTEST_TEST_URL names, %q", got, existing)
	}
	if got := pgtest.Start(t, pgtest.WithEnv("PGTEST_TEST_UNSET")); got == existing {
		t.Error("Start with no variable set returned the existing server, want a new one")
	}

	msg := failure(t, func(t testing.TB) {
		pgtest.Start(t, pgtest.WithEnv("PGTEST_TEST_URL"), pgtest.WithLogicalReplication())
	})
	t.Log(msg)
	for _, want := range []string{"$PGTEST_TEST_URL", "wal_level", `"replica"`, `"logical"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("WithEnv on a server without logical replication: failure %q, want it to say %s", msg, want)
		}
	}
	if got := setting(t, existing, "wal_level"); got != "replica" {
		t.Errorf("wal_level of the existing server = %q: Start changed it", got)
	}
	msg = failure(t, func(t testing.TB) { pgtest.Start(t, pgtest.WithEnv("PGTEST_TEST_OTHER")) })
	t.Log(msg)
	if !strings.Contains(msg, "$PGTEST_TEST_OTHER") || !strings.Contains(msg, "connect") {
		t.Errorf("WithEnv naming no server: failure %q, want it to name the variable and the failed connect", msg)
	}
}
