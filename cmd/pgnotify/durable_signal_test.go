package main_test

import (
	"context"
	"fmt"
	"strconv"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// logicalCluster starts a server with wal_level = logical for t, stopped
// when t ends, and returns its connection string.
func logicalCluster(t testing.TB, ctx context.Context) string {
	t.Helper()
	c, err := pgtmp.Start(ctx, pgtmp.WithLogicalReplication(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	return c.ConnString()
}

// labelOf is the label pgnotify gives the connection string url.
func labelOf(t testing.TB, url string) string {
	t.Helper()
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
}

// emitNumbered emits the payloads 1..n on channel, one transaction each.
func emitNumbered(t testing.TB, ctx context.Context, url, channel string, n int) {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for i := 1; i <= n; i++ {
		if err := durable.Emit(ctx, conn, pgnotify.Message{Channel: channel, Payload: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDurableSignalLosesNothing: SIGTERM or SIGINT while listen -durable
// reads a backlog leaves every message either printed or in the slot: the
// next run starts at the first message not printed (or one printed, never
// after). Before, the stream goroutine had already taken the next batch
// from Next when the signal came, and Close acknowledged it unprinted. With
// two databases, listen takes from each stream only what it prints.
func TestDurableSignalLosesNothing(t *testing.T) {
	requireServer(t)
	for _, tc := range []struct {
		name string
		dbs  int
		sig  syscall.Signal
	}{
		{"one database, SIGTERM", 1, syscall.SIGTERM},
		{"two databases, SIGINT", 2, syscall.SIGINT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			const backlog = 400
			var urls []string
			args := []string{"-durable", "-slot", "sig", "-format", "json"}
			for range tc.dbs {
				url := logicalCluster(t, ctx)
				if err := durable.CreateSlot(ctx, url, "sig"); err != nil {
					t.Fatal(err)
				}
				emitNumbered(t, ctx, url, "jobs", backlog)
				urls = append(urls, url)
				args = append(args, "-d", url)
			}
			// Three runs, each stopped by the signal after a few lines;
			// each must start where the one before stopped.
			next := map[string]int{} // by label: the first payload not printed yet
			for _, url := range urls {
				next[labelOf(t, url)] = 1
			}
			for run := range 3 {
				l := startListen(t, ctx, nil, append(args, "jobs")...)
				seen := map[string]bool{}
				for range 20 {
					obj := l.nextJSON(ctx)
					checkNext(t, run, obj, next, seen)
				}
				if err := l.cmd.Process.Signal(tc.sig); err != nil {
					t.Fatal(err)
				}
				for _, line := range rest(l.lines) {
					checkNext(t, run, parseLines(t, line)[0], next, seen)
				}
				if code := l.wait(ctx); code != 0 {
					t.Fatalf("run %d: exit %d after %v, want 0; stderr: %q", run, code, tc.sig, rest(l.stderr))
				}
			}
		})
	}
}

// checkNext fails t unless obj is the message that must come next from its
// database: the first one not printed yet, or (first in a run only) the last
// one printed, which may come again.
func checkNext(t testing.TB, run int, obj map[string]any, next map[string]int, seen map[string]bool) {
	t.Helper()
	db, _ := obj["db"].(string)
	want, ok := next[db]
	if !ok {
		t.Fatalf("run %d: line from unknown database %q: %v", run, db, obj)
	}
	got, err := strconv.Atoi(fmt.Sprint(obj["payload"]))
	if err != nil {
		t.Fatalf("run %d: line %v: payload not a number", run, obj)
	}
	switch {
	case got == want:
		next[db] = got + 1
	case got == want-1 && !seen[db]:
		// The last one printed before, redelivered: allowed, not lost.
	case got > want:
		t.Fatalf("run %d, %s: got message %d, want %d: messages %d..%d were neither printed nor left in the slot",
			run, db, got, want, want, got-1)
	default:
		t.Fatalf("run %d, %s: got message %d, want %d", run, db, got, want)
	}
	seen[db] = true
}
