package main_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// slotNames returns the replication slots of the server at url.
func slotNames(t testing.TB, ctx context.Context, url string) []string {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT slot_name FROM pg_replication_slots ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestCreateSlotAllOrNone: listen -durable -create-slot with two -d, the
// second of which cannot hold a slot (wal_level is not logical), creates no
// slot in the first and says why in one line naming the second. Before, it
// created the slot in the first, failed on the second and left the slot
// pinning WAL without a word.
func TestCreateSlotAllOrNone(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	good := logicalCluster(t, ctx)
	bad := dbURL(t, "postgres")
	var walLevel string
	if err := connect(t, "postgres").QueryRow(ctx, "SHOW wal_level").Scan(&walLevel); err != nil {
		t.Fatal(err)
	}
	if walLevel == "logical" {
		t.Fatal("the test server has wal_level = logical; this test needs one without (unset DATABASE_URL and PGNOTIFY_TEST_DATABASE_URL to use a throwaway server)")
	}

	r := run(t, ctx, nil, "", "listen", "-durable", "-slot", "both", "-create-slot", "-d", good, "-d", bad, "-idle", "1ms", "jobs")
	requireOneErrorLine(t, r, 1, "created no slot", label(t, "postgres"), "wal_level")
	if names := slotNames(t, ctx, good); len(names) != 0 {
		t.Fatalf("slots left in the first database: %q, want none", names)
	}

	// One database that can: the slot is created and named.
	r = run(t, ctx, nil, "", "listen", "-durable", "-slot", "both", "-create-slot", "-d", good, "-idle", "1ms", "jobs")
	if r.code != 0 || !strings.Contains(r.stderr, `created slot "both" in `+labelOf(t, good)) {
		t.Fatalf("listen -create-slot: exit %d; stderr %q; want 0 and the slot named", r.code, r.stderr)
	}
	// Again: it exists, nothing is created, nothing said about it.
	r = run(t, ctx, nil, "", "listen", "-durable", "-slot", "both", "-create-slot", "-d", good, "-idle", "1ms", "jobs")
	if r.code != 0 || strings.Contains(r.stderr, "created") {
		t.Fatalf("listen -create-slot on an existing slot: exit %d; stderr %q", r.code, r.stderr)
	}
}

// TestSlots: slots lists the durable slots with their state and retained
// WAL, and -drop drops one; a slot a reader holds cannot be dropped.
func TestSlots(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	url := logicalCluster(t, ctx)
	db := labelOf(t, url)

	r := run(t, ctx, nil, "", "slots", "-d", url, "-format", "text")
	if r.code != 0 || !strings.Contains(r.stdout, "no durable slots") {
		t.Fatalf("slots with none: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := run(t, ctx, nil, "", "listen", "-durable", "-slot", "mailer", "-create-slot", "-d", url, "-idle", "1ms", "jobs"); r.code != 0 {
		t.Fatalf("listen -create-slot: exit %d; stderr %q", r.code, r.stderr)
	}
	if r := run(t, ctx, nil, "", "emit", "-d", url, "jobs", strings.Repeat("x", 100000)); r.code != 0 {
		t.Fatalf("emit: exit %d; stderr %q", r.code, r.stderr)
	}

	r = run(t, ctx, nil, "", "slots", "-d", url)
	got := parseLines(t, r.stdout)
	if r.code != 0 || len(got) != 1 {
		t.Fatalf("slots: exit %d, lines %v; stderr %q", r.code, got, r.stderr)
	}
	if got[0]["db"] != db || got[0]["slot"] != "mailer" || got[0]["active"] != false || got[0]["invalidated"] != false {
		t.Errorf("slots: %v, want mailer in %s, inactive, not invalidated", got[0], db)
	}
	if retained, _ := got[0]["retained_wal_bytes"].(float64); retained < 100000 {
		t.Errorf("slots: retained_wal_bytes %v, want at least the 100000 bytes emitted", got[0]["retained_wal_bytes"])
	}

	// While a reader holds it: active, and -drop refuses.
	l := startListen(t, ctx, nil, "-durable", "-slot", "mailer", "-d", url, "jobs")
	if line := l.nextJSON(ctx); line["channel"] != "jobs" {
		t.Fatalf("listen: %v", line)
	}
	r = run(t, ctx, nil, "", "slots", "-d", url, "-format", "text")
	if r.code != 0 || !strings.Contains(r.stdout, "mailer  active  retains ") {
		t.Errorf("slots while read: exit %d, stdout %q", r.code, r.stdout)
	}
	requireOneErrorLine(t, run(t, ctx, nil, "", "slots", "-d", url, "-drop", "mailer"), 1, "in use", "stop its reader")
	l.interrupt()
	if code := l.wait(ctx); code != 0 {
		t.Fatalf("listen: exit %d", code)
	}

	r = run(t, ctx, nil, "", "slots", "-d", url, "-drop", "mailer")
	if r.code != 0 || !strings.Contains(r.stderr, `dropped slot "mailer"`) {
		t.Fatalf("slots -drop: exit %d, stderr %q", r.code, r.stderr)
	}
	if names := slotNames(t, ctx, url); len(names) != 0 {
		t.Errorf("slots after -drop: %q", names)
	}
	requireOneErrorLine(t, run(t, ctx, nil, "", "slots", "-d", url, "-drop", "mailer"), 1, "does not exist")
}
