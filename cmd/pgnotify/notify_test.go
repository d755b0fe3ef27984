package main_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
)

// TestNotifyStdin: 10,000 lines of standard input arrive in order, from one
// backend (one transaction); a last line without a newline counts too.
func TestNotifyStdin(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	const n = 10000
	l := startListen(t, ctx, nil, "-n", fmt.Sprint(n+2), "-d", dbURL(t, "postgres"), "bulk")

	var in strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&in, "line %d\n", i)
	}
	r := run(t, ctx, nil, in.String(), "notify", "-d", dbURL(t, "postgres"), "bulk")
	if r.code != 0 || r.stderr != "" || r.stdout != "" {
		t.Fatalf("notify: exit %d, stdout %q, stderr %q; want 0 and nothing", r.code, r.stdout, r.stderr)
	}
	// With $DATABASE_URL, and no newline after the last line.
	r = run(t, ctx, cliEnv("DATABASE_URL="+dbURL(t, "postgres")), "tail 1\ntail 2", "notify", "bulk")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("notify: exit %d, stderr %q; want 0 and nothing", r.code, r.stderr)
	}

	var pid any
	for i := 1; i <= n+2; i++ {
		obj := l.nextJSON(ctx)
		want := fmt.Sprintf("line %d", i)
		if i > n {
			want = fmt.Sprintf("tail %d", i-n)
		}
		if obj["payload"] != want {
			t.Fatalf("notification %d: payload %q, want %q", i, obj["payload"], want)
		}
		if i == 1 {
			pid = obj["pid"]
		} else if i <= n && obj["pid"] != pid {
			t.Fatalf("notification %d from backend %v, the first from %v: want one sender", i, obj["pid"], pid)
		}
	}
	if code := l.wait(ctx); code != 0 {
		t.Errorf("listen exit %d, want 0", code)
	}
}

// TestNotifyInvalidSendsNothing: an invalid channel, a payload of 8000
// bytes, one bad line among good ones, or empty input exits with one line
// on standard error (2 for invalid input, 0 for empty input) and sends
// nothing. A listener of the test's own proves it: a marker sent after
// pgnotify exits is the first notification it receives, and the server
// delivers in commit order.
func TestNotifyInvalidSendsNothing(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	long := strings.Repeat("x", 64)
	// The channel the server would listen on for long: LISTEN truncates
	// names to 63 bytes.
	truncated := long[:63]
	listener := connect(t, "postgres")
	if err := pgnotify.Listen(ctx, listener, "ch", truncated); err != nil {
		t.Fatal(err)
	}
	good := "good line\n"
	tooLong := strings.Repeat("p", 8000)

	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"invalid channel", "", []string{long, "p"}, 2, "invalid channel name"},
		{"invalid channel, stdin", good, []string{long}, 2, "invalid channel name"},
		{"payload of 8000 bytes", "", []string{"ch", tooLong}, 2, "8000 bytes"},
		{"one line of 8000 bytes", good + good + tooLong + "\n" + good, []string{"ch"}, 2, "line 3"},
		{"a NUL byte", good + "a\x00b\n", []string{"ch"}, 2, "line 2"},
		{"a line not UTF-8", good + "a\xffb\n" + good, []string{"ch"}, 2, "line 2: payload is not valid UTF-8"},
		{"a payload not UTF-8", "", []string{"ch", "\xff"}, 2, "not valid UTF-8"},
		{"empty input", "", []string{"ch"}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, ctx, nil, tc.stdin, append([]string{"notify", "-d", dbURL(t, "postgres")}, tc.args...)...)
			if tc.code == 0 {
				if r.code != 0 || r.stderr != "" {
					t.Fatalf("exit %d, stderr %q; want 0 and nothing", r.code, r.stderr)
				}
			} else {
				requireOneErrorLine(t, r, tc.code, tc.want)
			}
			requireNothingSent(t, ctx, listener, "ch", truncated)
		})
	}
}

// requireNothingSent sends a marker on each channel and fails t unless the
// markers are the first notifications conn receives.
func requireNothingSent(t testing.TB, ctx context.Context, conn *pgx.Conn, channels ...string) {
	t.Helper()
	marker := fmt.Sprintf("marker %p", t)
	for _, ch := range channels {
		// From conn itself: a session receives its own notifications.
		if err := pgnotify.Notify(ctx, conn, pgnotify.Message{Channel: ch, Payload: marker}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range channels {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n.Channel != ch || n.Payload != marker {
			t.Fatalf("received %q on %q before the marker: pgnotify sent something", n.Payload, n.Channel)
		}
	}
}

// TestNotifyCRLF: lines that end in "\r\n" deliver their text without the
// carriage return, for notify and emit alike.
func TestNotifyCRLF(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	l := startListen(t, ctx, nil, "-n", "3", "-d", dbURL(t, "postgres"), "crlf")
	r := run(t, ctx, nil, "a\r\nb\r\nc\r", "notify", "-d", dbURL(t, "postgres"), "crlf")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("notify: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"a", "b", "c"} {
		if obj := l.nextJSON(ctx); obj["payload"] != want {
			t.Errorf("payload %q, want %q", obj["payload"], want)
		}
	}
}
