package main_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
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
	firstLSN := ""
	if len(got) > 0 {
		firstLSN, _ = got[0]["lsn"].(string)
	}
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

	// The next run starts after the printed batch: "d" comes first. -lsn
	// decimal prints the number Event.LSN holds: the same position.
	r = listen("-n", "1", "-lsn", "decimal", "jobs")
	got = parseLines(t, r.stdout)
	if r.code != 0 || len(got) != 1 || got[0]["payload"] != "d" {
		t.Fatalf("second run: exit %d, lines %v; want only d; stderr:\n%s", r.code, got, r.stderr)
	}
	lsn, err := strconv.ParseUint(fmt.Sprint(got[0]["lsn"]), 10, 64)
	if err != nil || lsn == 0 {
		t.Fatalf("-lsn decimal: lsn %v, want a decimal number (%v)", got[0]["lsn"], err)
	}
	if first := lsnNumber(t, firstLSN); lsn <= first {
		t.Errorf("decimal lsn %d is not after the first batch's %s (%d)", lsn, firstLSN, first)
	}

	// A payload that is not UTF-8 comes in base64, byte for byte.
	if r := run(t, ctx, nil, "", "emit", "-d", url, "jobs", "\xff\xfe ok"); r.code != 0 {
		t.Fatalf("emit: exit %d; stderr:\n%s", r.code, r.stderr)
	}
	r = listen("-n", "1", "jobs")
	got = parseLines(t, r.stdout)
	if r.code != 0 || len(got) != 1 {
		t.Fatalf("third run: exit %d, lines %v; stderr:\n%s", r.code, got, r.stderr)
	}
	if _, ok := got[0]["payload"]; ok || got[0]["payload_base64"] != base64.StdEncoding.EncodeToString([]byte("\xff\xfe ok")) {
		t.Errorf("line %v: want payload_base64 of the bytes and no payload", got[0])
	}
}

// lsnNumber parses an LSN as PostgreSQL writes it ("16/B374D848").
func lsnNumber(t testing.TB, s string) uint64 {
	t.Helper()
	var hi, lo uint32
	if _, err := fmt.Sscanf(s, "%X/%X", &hi, &lo); err != nil {
		t.Fatalf("lsn %q: %v", s, err)
	}
	return uint64(hi)<<32 | uint64(lo)
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
