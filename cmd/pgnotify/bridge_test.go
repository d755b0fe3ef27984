package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/natstmp"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// bridgeProc is a running pgnotify bridge.
type bridgeProc struct {
	cmd    *exec.Cmd
	stderr chan string // standard error, line by line; closed at EOF
	exited chan struct{}
	err    error // of cmd.Wait, once exited is closed
}

// startBridge starts pgnotify bridge with args; it is killed when t ends if
// still running.
func startBridge(t testing.TB, args ...string) *bridgeProc {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"bridge"}, args...)...)
	cmd.Env = cliEnv()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &bridgeProc{cmd: cmd, stderr: make(chan string, 100), exited: make(chan struct{})}
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			b.stderr <- s.Text()
		}
		close(b.stderr)
		b.err = cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		go func() {
			for range b.stderr {
			}
		}()
		<-b.exited
	})
	return b
}

// expect waits for a line of standard error holding want.
func (b *bridgeProc) expect(t testing.TB, ctx context.Context, want string) string {
	t.Helper()
	select {
	case l, ok := <-b.stderr:
		if !ok {
			<-b.exited
			t.Fatalf("pgnotify bridge exited (%v) before a line with %q", b.err, want)
		}
		if !strings.Contains(l, want) {
			t.Fatalf("pgnotify bridge said %q, want a line with %q", l, want)
		}
		return l
	case <-ctx.Done():
		t.Fatalf("pgnotify bridge: no line with %q in time", want)
	}
	return ""
}

func startNATS(t testing.TB) *natstmp.Server {
	t.Helper()
	s, err := natstmp.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func TestBridgeNotify(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	ns := startNATS(t)
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("pg.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	url := dbURL(t, "postgres", "application_name=bridge_test")
	b := startBridge(t, "-d", url, "-nats", ns.URL(), "-prefix", "pg", "orders")
	b.expect(t, ctx, "→ NATS")

	admin := connect(t, "postgres")
	notifyFrom(t, ctx, admin, pgnotify.Message{Channel: "orders", Payload: "42"})
	m, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "pg.orders" || string(m.Data) != "42" || m.Header.Get("Pgnotify-Db") != label(t, "postgres") {
		t.Errorf("got %s %q %v", m.Subject, m.Data, m.Header)
	}

	// A terminated backend: a dead line and a recovered line on stderr, and
	// the same as JSON on pg._events.
	pid := backendPID(t, ctx, admin, "bridge_test", 0)
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	b.expect(t, ctx, "DEAD")
	b.expect(t, ctx, "RECOVERED")
	for _, want := range []string{"dead", "recovered"} {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ev struct{ Event string }
		if m.Subject != "pg._events" || json.Unmarshal(m.Data, &ev) != nil || ev.Event != want {
			t.Errorf("got %s %q, want a %s event", m.Subject, m.Data, want)
		}
	}

	if err := b.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	line := b.expect(t, ctx, "interrupted after")
	if !strings.Contains(line, "1 dead, 1 recovered") {
		t.Errorf("summary %q", line)
	}
	<-b.exited
	if b.err != nil {
		t.Errorf("exit after Ctrl-C: %v, want 0", b.err)
	}
}

func TestBridgeDurable(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	c, err := pgtmp.Start(ctx, pgtmp.WithLogicalReplication(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	url := c.ConnString()
	ns := startNATS(t)

	first := startBridge(t, "-d", url, "-nats", ns.URL(), "-durable", "-slot", "b", "-create-slot", "invoices")
	first.expect(t, ctx, "→ JetStream stream PGNOTIFY")
	second := startBridge(t, "-d", url, "-nats", ns.URL(), "-durable", "-slot", "b", "invoices")
	second.expect(t, ctx, "waiting to take over")

	for _, p := range []string{"a", "b", "c"} {
		if r := run(t, ctx, nil, "", "emit", "-d", url, "invoices", p); r.code != 0 {
			t.Fatalf("emit: %s", r.stderr)
		}
	}
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "PGNOTIFY")
	if err != nil {
		t.Fatal(err)
	}
	msgs := func() uint64 {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	for msgs() < 3 {
		select {
		case <-ctx.Done():
			t.Fatal("the messages did not reach JetStream")
		case <-time.After(10 * time.Millisecond):
		}
	}
	_ = first.cmd.Process.Kill()
	second.expect(t, ctx, "→ JetStream stream PGNOTIFY")
	if r := run(t, ctx, nil, "", "emit", "-d", url, "invoices", "d"); r.code != 0 {
		t.Fatalf("emit: %s", r.stderr)
	}
	for msgs() < 4 {
		select {
		case <-ctx.Done():
			t.Fatal("the second bridge did not publish")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if err := second.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	second.expect(t, ctx, "interrupted after")
	<-second.exited
	if second.err != nil {
		t.Errorf("exit after Ctrl-C: %v, want 0", second.err)
	}
	var got []string
	for seq := uint64(1); seq <= 4; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(m.Data))
	}
	if strings.Join(got, ",") != "a,b,c,d" || msgs() != 4 {
		t.Errorf("stream holds %q (%d), want a,b,c,d once each", got, msgs())
	}
}

func TestBridgeUnreachable(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	ns := startNATS(t)

	r := run(t, ctx, nil, "", "bridge", "-d", dbURL(t, "postgres"), "-nats", "nats://"+closed, "orders")
	requireOneErrorLine(t, r, 1, "NATS nats://"+closed)
	pg := "postgres://postgres@" + closed + "/app?sslmode=disable&connect_timeout=1"
	r = run(t, ctx, nil, "", "bridge", "-d", pg, "-nats", ns.URL(), "orders")
	requireOneErrorLine(t, r, 1, closed+"/app")
	r = run(t, ctx, nil, "", "bridge", "-d", pg, "-nats", ns.URL(), "-durable", "-slot", "s", "orders")
	requireOneErrorLine(t, r, 1, closed+"/app")
}

func TestBridgeUsage(t *testing.T) {
	ctx := testContext(t)
	for _, args := range [][]string{
		{"bridge", "-nats", "nats://x", "bad*channel"},
		{"bridge", "-nats", "nats://x"},
		{"bridge", "orders"},
		{"bridge", "-nats", "nats://x", "-durable", "orders"},
		{"bridge", "-nats", "nats://x", "-prefix", "a..b", "orders"},
	} {
		r := run(t, ctx, nil, "", args...)
		requireOneErrorLine(t, r, 2, "pgnotify bridge")
	}
	r := run(t, ctx, nil, "", "-h")
	if !strings.Contains(r.stdout, "bridge ") {
		t.Errorf("pgnotify -h does not list bridge:\n%s", r.stdout)
	}
	r = run(t, ctx, nil, "", "bridge", "-h")
	if r.code != 0 || !strings.Contains(r.stdout, "-nats URL") || !strings.Contains(r.stdout, "high availability") {
		t.Errorf("pgnotify bridge -h: exit %d\n%s", r.code, r.stdout)
	}
}
