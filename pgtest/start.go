package pgtest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// startTimeout bounds Start: initdb, the server's start and, with settings,
// its restart. Generous, for a loaded CI machine.
const startTimeout = 2 * time.Minute

// Option configures [Start].
type Option func(*config)

type config struct {
	logical  bool
	settings []setting
	env      []string // variables that may name a server to use instead
}

type setting struct{ name, value string }

// WithLogicalReplication makes the server ready for logical replication, as
// package durable needs: wal_level = logical, 32 replication slots and WAL
// senders, and synchronous_commit = on (logical decoding sends only flushed
// WAL). Without it the server keeps PostgreSQL's wal_level, replica.
func WithLogicalReplication() Option {
	return func(c *config) { c.logical = true }
}

// WithSetting sets a server setting (postgresql.conf's name = value), such as
// WithSetting("wal_sender_timeout", "2s") or WithSetting("max_connections",
// "500"). value is written as a quoted string, which PostgreSQL accepts for
// every kind of setting, units included. A later WithSetting of the same name
// wins. An unknown name or a value the server refuses fails the test.
//
// Settings cost one fast restart of the new server during [Start] (they are
// written with ALTER SYSTEM, and some take effect only at start). The settings pgtest starts with besides PostgreSQL's defaults:
// fsync, synchronous_commit and full_page_writes off (a throwaway server needs
// no durability), max_connections 300, shared_buffers 32MB.
func WithSetting(name, value string) Option {
	return func(c *config) { c.settings = append(c.settings, setting{name, value}) }
}

// WithEnv makes [Start] use an existing server when one of the environment
// variables names it: the value of the first one set and not empty is
// returned as the connection string, and no server is started or stopped.
// Use it to run a suite against a server of your choice on CI (say
// WithEnv("MYAPP_TEST_DATABASE_URL")), and keep the throwaway server for
// everyone else. pgnotify's own tests read PGNOTIFY_TEST_DATABASE_URL, then
// DATABASE_URL.
//
// An existing server is used as it is, never reconfigured: Start connects to
// it, fails the test if it cannot, and checks that it has what the other
// options ask for (wal_level for [WithLogicalReplication]; for
// [WithSetting], SHOW's text of each setting, so give values as SHOW prints
// them). The tests share that server with whatever else uses it, so they
// should use their own names (channels, tables, slots).
//
// Without WithEnv, Start ignores the environment: DATABASE_URL often names an
// application's own database, which a test should not touch by surprise.
func WithEnv(names ...string) Option {
	return func(c *config) { c.env = append(c.env, names...) }
}

// Start starts a throwaway PostgreSQL server for t and returns its connection
// string, a URL for the superuser postgres on database postgres over TCP on
// 127.0.0.1, without TLS or a password:
//
//	postgres://postgres@127.0.0.1:PORT/postgres?sslmode=disable
//
// The server runs initdb and pg_ctl from the installed binaries in a fresh
// temp dir, on a free port, and is stopped and removed in t.Cleanup, after
// the cleanups registered later (so a connection the test closes in its own
// cleanup closes first). Run as root, the server runs as the user postgres,
// because PostgreSQL refuses to run as root. A test binary killed before its
// cleanups run (go test -timeout) leaves its server behind; the next Start
// stops and removes it.
//
// Each call starts its own server (a second or two on an idle machine; initdb
// is most of it), so tests may run in parallel, each with its own. Tests that can share
// one server start it once and run as subtests of the test that did.
//
// Start fails t (t.Fatal: call it from the test's goroutine) when the server
// cannot be had, saying why: which binaries to install when they are missing,
// the end of the server's log when it does not come up. It never skips. It
// calls only t's Helper, Cleanup, Fatalf and Errorf.
func Start(t testing.TB, opts ...Option) string {
	t.Helper()
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if name, url := cfg.envServer(); url != "" {
		if err := check(ctx, url, cfg); err != nil {
			t.Fatalf("pgtest.Start: the server $%s names: %v", name, err)
		}
		return url
	}

	var popts []pgtmp.Option
	if cfg.logical {
		popts = append(popts, pgtmp.WithLogicalReplication(0))
	}
	c, err := pgtmp.Start(ctx, popts...)
	if err != nil {
		t.Fatalf("pgtest.Start: %s", startError(err))
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("pgtest: stop the server: %s", strings.TrimPrefix(err.Error(), "pgtmp: "))
		}
	})
	if len(cfg.settings) > 0 {
		if err := apply(ctx, c, cfg.settings); err != nil {
			t.Fatalf("pgtest.Start: %v", err)
		}
	}
	return c.ConnString()
}

// envServer returns the first of cfg.env that is set, and its value.
func (cfg config) envServer() (name, url string) {
	for _, name := range cfg.env {
		if url := os.Getenv(name); url != "" {
			return name, url
		}
	}
	return "", ""
}

// startError is pgtmp's error as a user of pgtest reads it: without the
// internal package's prefix, and with a word for machines whose package
// manager keeps the binaries off PATH.
func startError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "pgtmp: ")
	// pgtmp's missing-binaries error names apt-get only.
	if strings.Contains(msg, "not found") && strings.Contains(msg, "initdb") {
		msg += "; or put a PostgreSQL bin directory holding initdb and pg_ctl on PATH " +
			"(Homebrew: `brew install postgresql@17`, then add `$(brew --prefix postgresql@17)/bin` to PATH)"
	}
	return msg
}

// apply writes settings with ALTER SYSTEM and restarts the server, as some
// settings (max_connections, shared_buffers, wal_level) take effect only at
// start, and a reload would race with the test's first connections.
func apply(ctx context.Context, c *pgtmp.Cluster, settings []setting) error {
	conn, err := pgx.Connect(ctx, c.ConnString())
	if err != nil {
		return fmt.Errorf("connect to apply settings: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, s := range settings {
		sql := fmt.Sprintf("ALTER SYSTEM SET %s TO '%s'",
			pgx.Identifier{s.name}.Sanitize(), strings.ReplaceAll(s.value, "'", "''"))
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("setting %s = %q: %w", s.name, s.value, err)
		}
	}
	if err := conn.Close(ctx); err != nil {
		return fmt.Errorf("apply settings: %w", err)
	}
	if err := c.Restart(ctx, "fast"); err != nil {
		return fmt.Errorf("restart with the settings: %s", strings.TrimPrefix(err.Error(), "pgtmp: "))
	}
	return nil
}

// check connects to an existing server and reports what it lacks of cfg.
func check(ctx context.Context, url string, cfg config) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	want := cfg.settings
	if cfg.logical {
		want = append([]setting{{"wal_level", "logical"}}, want...)
	}
	for i, s := range want {
		if slices.ContainsFunc(want[i+1:], func(later setting) bool { return strings.EqualFold(later.name, s.name) }) {
			continue // the later one wins, as in apply
		}
		var got string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", s.name).Scan(&got); err != nil {
			return fmt.Errorf("read setting %s: %w", s.name, err)
		}
		if !strings.EqualFold(got, s.value) {
			return fmt.Errorf("%s = %q, the test needs %q: set it on that server, or unset the variable to have a throwaway server started",
				s.name, got, s.value)
		}
	}
	return nil
}
