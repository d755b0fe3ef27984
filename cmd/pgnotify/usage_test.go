package main_test

import (
	"strings"
	"testing"
)

// TestHelp: pgnotify -h and each command's -h exit 0 and print complete
// usage, with examples, on standard output.
func TestHelp(t *testing.T) {
	ctx := testContext(t)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"-h"}, []string{"listen", "notify", "stats", "emit", "slots", "DATABASE_URL", "Exit status", "; 3 listen's -idle", "; 4 notify", "Examples:"}},
		{[]string{"emit", "-h"}, []string{"Usage: pgnotify emit", "-d URL", "standard input", "one transaction", "wal_level", "Examples:"}},
		{[]string{"help"}, []string{"listen", "notify", "stats"}},
		{[]string{"listen", "-h"}, []string{"Usage: pgnotify listen", "-d URL", "-format", "-n COUNT", "-idle DUR", `"event":"dead"`, `"event":"recovered"`, "#2", "Examples:", "DATABASE_URL", "-durable", "-slot", "-create-slot", "lsn",
			"exits 3", "-lsn FORM", "creates no slot unless it can create all", "pgnotify slots -drop", "decimal", "payload_base64", "quoted Go-style"}},
		{[]string{"notify", "-h"}, []string{"Usage: pgnotify notify", "-d URL", "standard input", "one transaction", "7999", "UTF-8", `"\r\n"`, "exits 4", "Examples:"}},
		{[]string{"slots", "-h"}, []string{"Usage: pgnotify slots", "-d URL", "-drop NAME", "retained_wal_bytes", "invalidated", "active", "Examples:"}},
		{[]string{"stats", "-h"}, []string{"Usage: pgnotify stats", "-d URL", "pg_notification_queue_usage", "-min-age DUR", "one sample", "ClientWrite", "listens", "Examples:"}},
	} {
		r := run(t, ctx, nil, "", tc.args...)
		if r.code != 0 || r.stderr != "" {
			t.Errorf("pgnotify %s: exit %d, stderr %q; want 0 and nothing", strings.Join(tc.args, " "), r.code, r.stderr)
		}
		// Wrapping is the text's own business: compare with spaces folded.
		flat := strings.Join(strings.Fields(r.stdout), " ")
		for _, w := range tc.want {
			if !strings.Contains(r.stdout, w) && !strings.Contains(flat, w) {
				t.Errorf("pgnotify %s: usage lacks %q:\n%s", strings.Join(tc.args, " "), w, r.stdout)
			}
		}
	}
}

// TestUsageErrors: every usage or input error exits 2 with one line on
// standard error, before anything is connected to (no server is needed).
func TestUsageErrors(t *testing.T) {
	ctx := testContext(t)
	// A server that is not there: these must fail before connecting.
	env := cliEnv("DATABASE_URL=postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	long := strings.Repeat("x", 64)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no command"},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"emit"}, "no CHANNEL"},
		{[]string{"emit", long, "p"}, "invalid channel name"},
		{[]string{"listen", "-x", "ch"}, "-x"},
		{[]string{"listen", "-durable", "ch"}, "-slot"},
		{[]string{"listen", "-slot", "s", "ch"}, "-durable"},
		{[]string{"listen", "-durable", "-slot", "s", ""}, "invalid channel name"},
		{[]string{"listen"}, "no CHANNEL"},
		{[]string{"listen", "-format", "xml", "ch"}, "json or text"},
		{[]string{"listen", "-n", "-1", "ch"}, "-n"},
		{[]string{"listen", "-idle", "soon", "ch"}, "-idle"},
		{[]string{"listen", "-idle", "5", "ch"}, "needs a unit"},
		{[]string{"listen", "-lsn", "hex", "ch"}, "pg or decimal"},
		{[]string{"listen", "-lsn", "decimal", "ch"}, "-durable"},
		{[]string{"notify", "ch", "a\xffb"}, "not valid UTF-8"},
		{[]string{"listen", ""}, "invalid channel name"},
		{[]string{"listen", "ok", long}, "invalid channel name"},
		{[]string{"listen", "-d", "postgres://%zz", "ch"}, "cannot parse"},
		{[]string{"notify"}, "no CHANNEL"},
		{[]string{"notify", "ch", "a", "b"}, "want CHANNEL [PAYLOAD]"},
		{[]string{"notify", long, "p"}, "invalid channel name"},
		{[]string{"notify", "ch", strings.Repeat("p", 8000)}, "8000 bytes"},
		{[]string{"stats", "extra"}, "no arguments"},
		{[]string{"slots", "extra"}, "no arguments"},
		{[]string{"slots", "-drop", "Bad-Name"}, "invalid slot name"},
		{[]string{"listen", "-durable", "-slot", "Bad", "ch"}, "invalid slot name"},
	} {
		r := run(t, ctx, env, "", tc.args...)
		name := strings.Join(tc.args, " ")
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			requireOneErrorLine(t, r, 2, tc.want)
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

// TestFlagsAfterArguments: flags may follow the arguments, and "--" ends
// them.
func TestFlagsAfterArguments(t *testing.T) {
	ctx := testContext(t)
	env := cliEnv("DATABASE_URL=postgres://nobody@127.0.0.1:1/none?connect_timeout=1")
	// -format after the channel is parsed as a flag: its bad value is the error.
	r := run(t, ctx, env, "", "listen", "ch", "-format", "xml")
	requireOneErrorLine(t, r, 2, "json or text")
	// After --, "-5" is a payload, which is fine; the (absent) server is the error.
	r = run(t, ctx, env, "", "notify", "--", "ch", "-5")
	requireOneErrorLine(t, r, 1, "127.0.0.1:1/none")
}
