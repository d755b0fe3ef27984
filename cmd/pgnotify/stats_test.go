package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
)

// TestStats: stats reports the queue usage as JSON for a script, and as a
// sentence for a person.
func TestStats(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	r := run(t, ctx, nil, "", "stats", "-d", dbURL(t, "postgres"))
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("stats: exit %d, stderr %q", r.code, r.stderr)
	}
	var got struct {
		DB            string  `json:"db"`
		Usage         float64 `json:"usage"`
		CapacityBytes int64   `json:"capacity_bytes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stats output %q: %v", r.stdout, err)
	}
	if got.DB != label(t, "postgres") || got.Usage < 0 || got.Usage > 1 || got.CapacityBytes <= 0 {
		t.Errorf("stats: %+v", got)
	}

	r = run(t, ctx, nil, "", "stats", "-format", "text", "-d", dbURL(t, "postgres"))
	if r.code != 0 || !strings.Contains(r.stdout, "notification queue") || len(lines(r.stdout)) != 1 {
		t.Errorf("stats -format text: exit %d, output %q", r.code, r.stdout)
	}
}

// TestStatsNamesHolders: a session that LISTENs inside an open transaction
// holds the queue back while notifications pile up. stats names it (PID,
// application name, state, for how long, that it listens) and does not
// claim that listeners keep up. Before, it printed only the fraction and
// "normal: listeners keep up".
func TestStatsNamesHolders(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	app := fmt.Sprintf("stuck-listener-%d", time.Now().UnixNano())
	stuck, err := pgx.Connect(ctx, dbURL(t, "postgres", "application_name="+app))
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close(context.Background())
	tx, err := stuck.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	// LISTEN takes effect at commit: commit one, then sit in a new
	// transaction whose last statement is a LISTEN, as the issue's
	// listener did.
	if _, err := tx.Exec(ctx, `LISTEN "piling"`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if tx, err = stuck.Begin(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LISTEN "piling"`); err != nil {
		t.Fatal(err)
	}
	sender := connect(t, "postgres")
	// Enough to fill several of the queue's 8 kB pages: usage counts pages.
	var pile []pgnotify.Message
	for i := range 20 {
		pile = append(pile, pgnotify.Message{Channel: "piling", Payload: fmt.Sprintf("%d %s", i, strings.Repeat("x", 4000))})
	}
	notifyFrom(t, ctx, sender, pile...)

	r := run(t, ctx, nil, "", "stats", "-min-age", "0s", "-d", dbURL(t, "postgres"))
	if r.code != 0 {
		t.Fatalf("stats: exit %d, stderr %q", r.code, r.stderr)
	}
	var got struct {
		Usage    float64 `json:"usage"`
		Sessions []struct {
			PID             uint32  `json:"pid"`
			ApplicationName string  `json:"application_name"`
			State           string  `json:"state"`
			Seconds         float64 `json:"seconds"`
			Listens         bool    `json:"listens"`
			InTransaction   bool    `json:"in_transaction"`
		} `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("stats output %q: %v", r.stdout, err)
	}
	if got.Usage <= 0 {
		t.Errorf("usage %v with an unread notification, want > 0", got.Usage)
	}
	found := false
	for _, s := range got.Sessions {
		if s.PID == stuck.PgConn().PID() {
			found = true
			if s.ApplicationName != app || s.State != "idle in transaction" || !s.Listens || !s.InTransaction || s.Seconds < 0 {
				t.Errorf("session %+v: want %s, idle in transaction, listens", s, app)
			}
		}
	}
	if !found {
		t.Fatalf("stats does not name the stuck listener %d: %s", stuck.PgConn().PID(), r.stdout)
	}

	r = run(t, ctx, nil, "", "stats", "-min-age", "0s", "-format", "text", "-d", dbURL(t, "postgres"))
	if strings.Contains(r.stdout, "keep up") {
		t.Errorf("text claims listeners keep up:\n%s", r.stdout)
	}
	if want := fmt.Sprintf("pid %d  app %s", stuck.PgConn().PID(), app); !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, "listens") {
		t.Errorf("text does not name the stuck listener (%q, listens):\n%s", want, r.stdout)
	}
}

// TestStatsNamesNonReader: a listening client that stops reading its socket
// leaves its backend blocked writing notifications to it (wait_event
// ClientWrite), outside any transaction. stats names it too.
func TestStatsNamesNonReader(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	deaf := connect(t, "postgres")
	if err := pgnotify.Listen(ctx, deaf, "flood"); err != nil {
		t.Fatal(err)
	}
	// deaf is not read from now on. Send until its backend is blocked: more
	// than the socket buffers on both sides hold.
	admin := connect(t, "postgres")
	payload := strings.Repeat("x", 7900)
	blocked := func() bool {
		var ev string
		if err := admin.QueryRow(ctx, "SELECT coalesce(wait_event, '') FROM pg_stat_activity WHERE pid = $1", deaf.PgConn().PID()).Scan(&ev); err != nil {
			t.Fatal(err)
		}
		return ev == "ClientWrite"
	}
	for i := 0; !blocked(); i++ {
		if ctx.Err() != nil || i > 1000 {
			t.Fatalf("the deaf listener's backend never blocked on ClientWrite after %d MB", i*500*len(payload)>>20)
		}
		msgs := make([]pgnotify.Message, 500)
		for j := range msgs {
			msgs[j] = pgnotify.Message{Channel: "flood", Payload: fmt.Sprintf("%d.%d %s", i, j, payload)}
		}
		notifyFrom(t, ctx, admin, msgs...)
	}

	r := run(t, ctx, nil, "", "stats", "-min-age", "0s", "-format", "text", "-d", dbURL(t, "postgres"))
	line := ""
	for _, l := range lines(r.stdout) {
		if strings.Contains(l, fmt.Sprintf("pid %d ", deaf.PgConn().PID())) {
			line = l
		}
	}
	if r.code != 0 || !strings.Contains(line, "blocked writing to its client") || !strings.Contains(line, "listens") {
		t.Fatalf("stats: exit %d; want a line naming %d as blocked writing to its client and listening:\n%s%s",
			r.code, deaf.PgConn().PID(), r.stdout, r.stderr)
	}
}
