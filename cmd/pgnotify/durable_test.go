package main_test

import (
	"encoding/json"
	"testing"

	"github.com/seed-c59d106d/pgnotify/pgtest"
)

// TestDurable: emit while nothing listens, then listen -durable reads it
// from the slot, one transaction as one whole batch with its LSN, and a
// second run starts after what the first printed. The cluster is its own:
// package durable needs wal_level = logical.
func TestDurable(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	url := pgtest.Start(t, pgtest.WithLogicalReplication())
	listen := func(args ...string) result {
		t.Helper()
		return run(t, ctx, nil, "", append([]string{"listen", "-durable", "-slot", "cli_slot", "-d", url, "-format", "json"}, args...)...)
	}

	// No slot: a clear error that says how to make one.
	requireOneErrorLine(t, listen("-idle", "1ms", "jobs"), 1, "does not exist", "-create-slot")
	if r := listen("-create-slot", "-idle", "1ms", "jobs"); r.code != 0 {
		t.Fatalf("listen -create-slot: exit %d; stderr:\n%s", r.code, r.stderr)
	}

	// Emitted while nobody listens: three lines in one transaction, one on
	// another channel, then one more transaction.
	for _, e := range []struct{ stdin, channel string }{{"a\nb\nc", "jobs"}, {"x", "other"}, {"d\n", "jobs"}} {
		if r := run(t, ctx, nil, e.stdin, "emit", "-d", url, e.channel); r.code != 0 || r.stderr != "" {
			t.Fatalf("emit %s: exit %d; stderr:\n%s", e.channel, r.code, r.stderr)
		}
	}

	// -n 1 ends at the end of the batch it falls in: all three, one LSN.
	r := listen("-n", "1", "jobs")
	if r.code != 0 {
		t.Fatalf("listen -n 1: exit %d; stderr:\n%s", r.code, r.stderr)
	}
	got := parseLines(t, r.stdout)
	if len(got) != 3 {
		t.Fatalf("listen -n 1 printed %d lines, want the whole batch of 3:\n%s", len(got), r.stdout)
	}
	for i, want := range []string{"a", "b", "c"} {
		if got[i]["payload"] != want || got[i]["channel"] != "jobs" || got[i]["pid"] != 0.0 {
			t.Errorf("line %d = %v, want payload %q on jobs with pid 0", i, got[i], want)
		}
		if lsn, _ := got[i]["lsn"].(string); lsn == "" || lsn != got[0]["lsn"] {
			t.Errorf("line %d: lsn %v, want the batch's one LSN %v", i, got[i]["lsn"], got[0]["lsn"])
		}
	}

	// The next run starts after the printed batch: "d" comes first.
	r = listen("-n", "1", "jobs")
	got = parseLines(t, r.stdout)
	if r.code != 0 || len(got) != 1 || got[0]["payload"] != "d" {
		t.Fatalf("second run: exit %d, lines %v; want only d; stderr:\n%s", r.code, got, r.stderr)
	}
}

// parseLines parses each line of out as a JSON object.
func parseLines(t testing.TB, out string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for _, l := range lines(out) {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q: %v", l, err)
		}
		objs = append(objs, m)
	}
	return objs
}
