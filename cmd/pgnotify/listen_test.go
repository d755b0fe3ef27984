package main_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
)

// notifyFrom sends msgs on conn, failing t on error.
func notifyFrom(t testing.TB, ctx context.Context, conn *pgx.Conn, msgs ...pgnotify.Message) {
	t.Helper()
	if err := pgnotify.Notify(ctx, conn, msgs...); err != nil {
		t.Fatal(err)
	}
}

// requireNotification fails t unless obj is a notification line from db
// on channel with payload, with a PID and a receive time.
func requireNotification(t testing.TB, obj map[string]any, db, channel, payload string) {
	t.Helper()
	if _, ok := obj["event"]; ok {
		t.Fatalf("notification line %v has an event key", obj)
	}
	if obj["db"] != db || obj["channel"] != channel || obj["payload"] != payload {
		t.Fatalf("line %v: want db %q, channel %q, payload %q", obj, db, channel, payload)
	}
	if pid, ok := obj["pid"].(float64); !ok || pid <= 0 {
		t.Errorf("line %v: pid %v, want a backend PID", obj, obj["pid"])
	}
	requireTime(t, obj)
}

// requireTime fails t unless obj["time"] is RFC 3339 UTC with nanoseconds.
func requireTime(t testing.TB, obj map[string]any) {
	t.Helper()
	s, _ := obj["time"].(string)
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || !strings.HasSuffix(s, "Z") || len(s) != len("2006-01-02T15:04:05.000000000Z") {
		t.Errorf("time %q: want RFC 3339 UTC with nine digits of nanoseconds (%v)", s, err)
	}
	if time.Since(at) > time.Hour || time.Until(at) > time.Hour {
		t.Errorf("time %q is not now", s)
	}
}

// TestListenJSON: notify → listen prints it as a JSON line (the default
// when standard output is not a terminal), with $DATABASE_URL as the
// server; text format prints the same as one readable line.
func TestListenJSON(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	sender := connect(t, "postgres")
	url := dbURL(t, "postgres")

	l := startListen(t, ctx, cliEnv("DATABASE_URL="+url), "Orders")
	if !strings.Contains(l.ready, "Orders") || !strings.Contains(l.ready, label(t, "postgres")) {
		t.Errorf("ready line %q does not name the channel and the database", l.ready)
	}
	payload := `{"id": 42, "note": "<a & b>"}` + "\t☃"
	notifyFrom(t, ctx, sender, pgnotify.Message{Channel: "Orders", Payload: payload})
	requireNotification(t, l.nextJSON(ctx), label(t, "postgres"), "Orders", payload)

	// Text: one line with the database, channel, pid and payload, quoted
	// here because it holds a tab.
	l = startListen(t, ctx, nil, "-format", "text", "-d", url, "Orders")
	notifyFrom(t, ctx, sender, pgnotify.Message{Channel: "Orders", Payload: "plain payload"}, pgnotify.Message{Channel: "Orders", Payload: payload})
	first, second := l.next(ctx), l.next(ctx)
	for _, want := range []string{label(t, "postgres"), "Orders", "pid=", "  plain payload"} {
		if !strings.Contains(first, want) {
			t.Errorf("text line %q lacks %q", first, want)
		}
	}
	if !strings.Contains(second, `"{\"id\": 42, \"note\": \"<a & b>\"}\t☃"`) {
		t.Errorf("text line %q: want the payload quoted", second)
	}
}

// TestListenSeveralDatabases: one listen on three databases, one of them
// given twice, labels each line with the database it came from; the repeat
// gets #2. -n counts lines from all databases and exits 0.
func TestListenSeveralDatabases(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	admin := connect(t, "postgres")
	dbs := []string{"postgres", createDatabase(t, ctx, admin, "b"), createDatabase(t, ctx, admin, "c")}

	l := startListen(t, ctx, nil, "-n", "4",
		"-d", dbURL(t, dbs[0]), "-d", dbURL(t, dbs[1]), "-d", dbURL(t, dbs[2]), "-d", dbURL(t, dbs[0]), "jobs")
	for _, db := range dbs {
		notifyFrom(t, ctx, connect(t, db), pgnotify.Message{Channel: "jobs", Payload: "to " + db})
	}
	got := map[string]string{}
	for range 4 {
		obj := l.nextJSON(ctx)
		db, _ := obj["db"].(string)
		if _, dup := got[db]; dup {
			t.Fatalf("two lines from %q", db)
		}
		got[db], _ = obj["payload"].(string)
		requireNotification(t, obj, db, "jobs", got[db])
	}
	want := map[string]string{
		label(t, dbs[0]):        "to " + dbs[0],
		label(t, dbs[0]) + "#2": "to " + dbs[0],
		label(t, dbs[1]):        "to " + dbs[1],
		label(t, dbs[2]):        "to " + dbs[2],
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("lines by database: got %v, want %v", got, want)
	}
	if code := l.wait(ctx); code != 0 {
		t.Errorf("exit %d after -n 4, want 0", code)
	}
	if extra := rest(l.lines); len(extra) > 0 {
		t.Errorf("lines after the 4th: %q", extra)
	}
}

// createDatabase creates a database for t, dropped when t ends, and
// returns its name.
func createDatabase(t testing.TB, ctx context.Context, admin *pgx.Conn, suffix string) string {
	t.Helper()
	name := fmt.Sprintf("pgnotify_cli_%d_%s", time.Now().UnixNano(), suffix)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	return name
}

// TestListenCount: -n stops after COUNT notification lines, even in the
// middle of a batch, and exits 0.
func TestListenCount(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	sender := connect(t, "postgres")
	l := startListen(t, ctx, nil, "-n", "2", "-d", dbURL(t, "postgres"), "c")
	notifyFrom(t, ctx, sender,
		pgnotify.Message{Channel: "c", Payload: "1"},
		pgnotify.Message{Channel: "c", Payload: "2"},
		pgnotify.Message{Channel: "c", Payload: "3"})
	if code := l.wait(ctx); code != 0 {
		t.Fatalf("exit %d after -n 2, want 0", code)
	}
	var payloads []string
	for _, line := range rest(l.lines) {
		payloads = append(payloads, line[strings.Index(line, `"payload"`):strings.Index(line, `,"pid"`)])
	}
	if fmt.Sprint(payloads) != `["payload":"1" "payload":"2"]` {
		t.Errorf("lines: %q, want payloads 1 and 2", payloads)
	}
}

// TestListenIdle: -idle exits 0 once no notification has arrived for DUR,
// counted from the start and again from each notification.
func TestListenIdle(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	l := startListen(t, ctx, nil, "-idle", "500ms", "-d", dbURL(t, "postgres"), "c")
	if code := l.wait(ctx); code != 0 {
		t.Fatalf("exit %d after -idle with nothing, want 0", code)
	}
	if out := rest(l.lines); len(out) != 0 {
		t.Errorf("output %q, want none", out)
	}

	// A notification restarts the count: the process prints it and exits
	// 0 later. The limit leaves ample time for one sent as soon as the
	// listener is ready.
	sender := connect(t, "postgres")
	l = startListen(t, ctx, nil, "-idle", "5s", "-d", dbURL(t, "postgres"), "c")
	notifyFrom(t, ctx, sender, pgnotify.Message{Channel: "c", Payload: "keep going"})
	requireNotification(t, l.nextJSON(ctx), label(t, "postgres"), "c", "keep going")
	if code := l.wait(ctx); code != 0 {
		t.Fatalf("exit %d after -idle, want 0", code)
	}
}

// TestListenIdleBeforeCount: -idle that ends a -n listen before COUNT lines
// exits 3 with one line saying it timed out; one that ends it after none is
// asked for (no -n) exits 0, as TestListenIdle shows.
func TestListenIdleBeforeCount(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	sender := connect(t, "postgres")
	l := startListen(t, ctx, nil, "-n", "2", "-idle", "300ms", "-d", dbURL(t, "postgres"), "c")
	notifyFrom(t, ctx, sender, pgnotify.Message{Channel: "c", Payload: "only one"})
	requireNotification(t, l.nextJSON(ctx), label(t, "postgres"), "c", "only one")
	if code := l.wait(ctx); code != 3 {
		t.Fatalf("exit %d when -idle ended -n 2 after one line, want 3", code)
	}
	if errs := rest(l.stderr); len(errs) != 1 || !strings.Contains(errs[0], "timed out") || !strings.Contains(errs[0], "1 of 2") {
		t.Errorf("stderr %q, want one line saying it timed out after 1 of 2", errs)
	}
}

// TestListenTextEscapes: in text lines a channel name or payload that could
// split the line is quoted, so one notification is one line.
func TestListenTextEscapes(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	sender := connect(t, "postgres")
	channel := "evil\n2026-01-01T00:00:00Z  fake  line"
	l := startListen(t, ctx, nil, "-format", "text", "-n", "2", "-d", dbURL(t, "postgres"), channel, "plain")
	notifyFrom(t, ctx, sender, pgnotify.Message{Channel: channel, Payload: "x\ry"}, pgnotify.Message{Channel: "plain", Payload: "after"})
	if code := l.wait(ctx); code != 0 {
		t.Fatalf("exit %d", code)
	}
	got := rest(l.lines)
	if len(got) != 2 {
		t.Fatalf("%d lines for 2 notifications: %q", len(got), got)
	}
	if !strings.Contains(got[0], `"evil\n2026-01-01T00:00:00Z  fake  line"`) || !strings.Contains(got[0], `"x\ry"`) {
		t.Errorf("line %q: want the channel and payload quoted", got[0])
	}
	if !strings.Contains(got[1], "  plain  ") || !strings.HasSuffix(got[1], "  after") {
		t.Errorf("line %q: want a plain channel and payload as they are", got[1])
	}
}

// TestListenRecovers: when the server terminates listen's backend, listen
// prints a dead line, then a recovered line, with the same label, and then
// delivers again.
func TestListenRecovers(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	admin := connect(t, "postgres")
	app := fmt.Sprintf("pgnotify-recovers-%d", time.Now().UnixNano())
	l := startListen(t, ctx, nil, "-d", dbURL(t, "postgres", "application_name="+app), "c")
	db := label(t, "postgres")

	pid := backendPID(t, ctx, admin, app, 0)
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	dead := l.nextJSON(ctx)
	if dead["event"] != "dead" || dead["db"] != db || !strings.Contains(fmt.Sprint(dead["error"]), "57P01") {
		t.Fatalf("line %v: want a dead event from %s with the server's 57P01", dead, db)
	}
	requireTime(t, dead)
	recovered := l.nextJSON(ctx)
	if recovered["event"] != "recovered" || recovered["db"] != db {
		t.Fatalf("line %v: want a recovered event from %s", recovered, db)
	}
	requireTime(t, recovered)
	// One new backend has replaced it (the old one, excluded, may still be
	// on its way out of pg_stat_activity).
	backendPID(t, ctx, admin, app, pid)

	notifyFrom(t, ctx, admin, pgnotify.Message{Channel: "c", Payload: "after"})
	requireNotification(t, l.nextJSON(ctx), db, "c", "after")
}

// backendPID returns the PID of the one backend whose application_name is
// app, besides except (0: none). It fails t unless there is exactly one.
func backendPID(t testing.TB, ctx context.Context, admin *pgx.Conn, app string, except uint32) uint32 {
	t.Helper()
	var pids []uint32
	rows, err := admin.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND pid <> $2", app, except)
	if err == nil {
		pids, err = pgx.CollectRows(rows, pgx.RowTo[uint32])
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(pids) != 1 {
		t.Fatalf("backends of %s besides %d: %v, want one", app, except, pids)
	}
	return pids[0]
}

// TestListenInterrupt: Ctrl-C (SIGINT) exits 0 with a one-line summary on
// standard error.
func TestListenInterrupt(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	sender := connect(t, "postgres")
	l := startListen(t, ctx, nil, "-d", dbURL(t, "postgres"), "c")
	notifyFrom(t, ctx, sender, pgnotify.Message{Channel: "c", Payload: "one"})
	requireNotification(t, l.nextJSON(ctx), label(t, "postgres"), "c", "one")
	l.interrupt()
	if code := l.wait(ctx); code != 0 {
		t.Fatalf("exit %d after SIGINT, want 0", code)
	}
	summary := rest(l.stderr)
	if len(summary) != 1 || !strings.Contains(summary[0], "interrupted") || !strings.Contains(summary[0], "1 notification(s)") {
		t.Errorf("stderr after SIGINT: %q, want one summary line counting 1 notification", summary)
	}

	// While still connecting, to a server that never answers.
	silent, accepted := silentServer(t)
	cmd := exec.CommandContext(ctx, binary, "listen", "-d", "postgres://postgres@"+silent+"/app?sslmode=disable&connect_timeout=60", "c")
	cmd.Env = cliEnv()
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-accepted:
	case <-ctx.Done():
		t.Fatal("pgnotify listen never connected to the silent server")
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || stdout.Len() != 0 || len(lines(stderr.String())) != 1 {
		t.Errorf("SIGINT while connecting: %v, stdout %q, stderr %q; want exit 0, one line on stderr", err, stdout.String(), stderr.String())
	}
}

// TestUnreachable: a server that refuses the connection, or one that
// accepts it and never answers, is one clear error line naming the
// database, exit 1, within the connect timeout (the test's deadline
// catches a hang).
func TestUnreachable(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)

	refused, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedAddr := refused.Addr().String()
	refused.Close()

	silent, _ := silentServer(t)

	for _, tc := range []struct {
		name, addr, want string
	}{
		{"refused", refusedAddr, "refused"},
		{"silent", silent, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := "postgres://postgres@" + tc.addr + "/app?sslmode=disable&connect_timeout=1"
			db := tc.addr + "/app"
			r := run(t, ctx, nil, "", "listen", "-d", dbURL(t, "postgres"), "-d", url, "c")
			requireOneErrorLine(t, r, 1, db, tc.want)
			r = run(t, ctx, nil, "", "notify", "-d", url, "c", "p")
			requireOneErrorLine(t, r, 1, db, tc.want)
			r = run(t, ctx, nil, "", "stats", "-d", url)
			requireOneErrorLine(t, r, 1, db, tc.want)
		})
	}
}

// silentServer accepts TCP connections and never answers, like a server
// behind a dead network; it returns its address and a channel that receives
// once per connection accepted (when there is room), and stops when t ends.
func silentServer(t testing.TB) (string, <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	accepted := make(chan struct{}, 10)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case accepted <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String(), accepted
}
