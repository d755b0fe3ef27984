package main_test

import (
	"bytes"
	bin "encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/seed-c59d106d/pgnotify"
)

// TestNotifyCommitUnknown: when the connection breaks after COMMIT was sent
// and before its answer, notify cannot know whether the server committed. It
// must say so and exit 4, never "nothing sent" (a script would send it all
// again). Here the server did commit: the listener gets every payload.
func TestNotifyCommitUnknown(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(cfg.Host, "/") {
		t.Fatalf("the test server listens on a Unix socket (%s); this test needs TCP", cfg.Host)
	}
	proxy := newCommitCutter(t, fmt.Sprintf("%s:%d", cfg.Host, cfg.Port))
	url := strings.Replace(dbURL(t, "postgres"), fmt.Sprintf("%s:%d", cfg.Host, cfg.Port), proxy, 1)

	listener := connect(t, "postgres")
	if err := pgnotify.Listen(ctx, listener, "cut"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args  []string
		stdin string
		want  []string
	}{
		{[]string{"notify", "-d", url, "cut", "one"}, "", []string{"one"}},
		{[]string{"notify", "-d", url, "cut"}, "a\nb\nc\n", []string{"a", "b", "c"}},
	} {
		r := run(t, ctx, nil, tc.stdin, tc.args...)
		requireOneErrorLine(t, r, 4, "may or may not", "COMMIT")
		if strings.Contains(r.stderr, "nothing sent") {
			t.Errorf("stderr %q says nothing was sent", r.stderr)
		}
		for _, want := range tc.want {
			n, err := listener.WaitForNotification(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n.Channel != "cut" || n.Payload != want {
				t.Fatalf("got %q on %q, want %q: the commit went through", n.Payload, n.Channel, want)
			}
		}
	}
}

// newCommitCutter starts a proxy to target that forwards everything until
// a client sends a simple-protocol COMMIT: it passes that message on, then
// closes the client's side at once, so the answer never arrives. It returns
// the proxy's address; it stops when t ends.
func newCommitCutter(t testing.TB, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			track(client)
			track(server)
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(client, server)
				client.Close()
			}()
			go func() {
				defer wg.Done()
				forwardUntilCommit(client, server)
				client.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// forwardUntilCommit copies the client's messages to server, one frame at a
// time, and returns after forwarding a Query message that is a COMMIT. The
// first message (startup) has no type byte.
func forwardUntilCommit(client, server net.Conn) {
	var head [5]byte
	if _, err := io.ReadFull(client, head[:4]); err != nil {
		return
	}
	n := bin.BigEndian.Uint32(head[:4])
	body := make([]byte, n-4)
	if _, err := io.ReadFull(client, body); err != nil {
		return
	}
	if _, err := server.Write(append(head[:4:4], body...)); err != nil {
		return
	}
	for {
		if _, err := io.ReadFull(client, head[:]); err != nil {
			return
		}
		n := bin.BigEndian.Uint32(head[1:])
		body := make([]byte, n-4)
		if _, err := io.ReadFull(client, body); err != nil {
			return
		}
		if _, err := server.Write(append(head[:5:5], body...)); err != nil {
			return
		}
		if head[0] == 'Q' && bytes.EqualFold(bytes.TrimRight(body, "\x00; "), []byte("commit")) {
			return
		}
	}
}
