package durable_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
	"github.com/seed-c59d106d/pgnotify/pgtest"
)

// TestConsumerKilledMidBatch: a consumer process killed with SIGKILL while
// it holds a batch gets that batch again on reopen, and nothing earlier.
func TestConsumerKilledMidBatch(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	for i := 1; i <= 5; i++ {
		emit(t, conn, "work", fmt.Sprintf("%d.a", i), fmt.Sprintf("%d.b", i))
	}
	c := startChild(t, slot, "work", 3)
	var lsns []uint64
	for {
		l := c.line(t, ctx)
		if strings.HasPrefix(l, "holding ") {
			break
		}
		f := strings.Fields(l)
		if f[0] != "batch" {
			t.Fatalf("consumer: %s", l)
		}
		lsn, _ := strconv.ParseUint(f[1], 10, 64)
		lsns = append(lsns, lsn)
	}
	if len(lsns) != 3 {
		t.Fatalf("consumer saw %d batches before holding, want 3", len(lsns))
	}
	// Asking for the third batch acknowledged the second: wait until the
	// server has that, so "nothing earlier" is the stream's doing.
	waitUntil(t, 30*time.Second, "batch 2 confirmed", func() bool {
		return readSlot(t, conn, slot).confirmed > pglogrepl.LSN(lsns[1])
	})
	c.kill()
	waitReleased(t, conn, slot)

	s := open(t, connString, slot, []string{"work"}, fast...)
	for i := 3; i <= 5; i++ {
		ev := nextBatch(t, ctx, s)
		want := fmt.Sprintf("%d.a,%d.b", i, i)
		if got := strings.Join(payloads(ev), ","); got != want {
			t.Fatalf("after the crash, batch %q, want %q", got, want)
		}
		if i == 3 && ev.LSN != lsns[2] {
			t.Fatalf("redelivered batch LSN %d, want the held batch's %d", ev.LSN, lsns[2])
		}
	}
}

// TestWalsenderTerminated: the walsender killed under an open stream yields
// Dead (with the server's 57P01) and Recovered, and nothing is lost or
// delivered twice.
func TestWalsenderTerminated(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	s := open(t, connString, slot, []string{"t"}, fast...)
	for i := range 5 {
		emit(t, conn, "t", strconv.Itoa(i))
	}
	got := collect(t, ctx, s, 2) // holds the second
	pid := readSlot(t, conn, slot).pid
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	for i := 5; i < 10; i++ {
		emit(t, conn, "t", strconv.Itoa(i))
	}
	emit(t, conn, "t", "end")
	seen := eventsUntil(t, ctx, s, "end")
	if seen.dead != 1 || seen.recovered != 1 {
		t.Fatalf("saw %d Dead and %d Recovered events, want 1 each", seen.dead, seen.recovered)
	}
	var pgErr *pgconn.PgError
	if !errors.As(seen.deadErr, &pgErr) || pgErr.Code != "57P01" {
		t.Fatalf("Dead.Err = %v, want the server's 57P01", seen.deadErr)
	}
	checkAll(t, append(got, seen.payloads...), 10, 0)
}

// TestServerRestart: nothing is lost across a server restart, fast or
// immediate, with batches held and queued. Within a stream, batches the
// server sends again are never delivered twice; a stream opened after a
// restart may get already acknowledged batches again (the server saves
// confirmed positions lazily). The test logs that count.
func TestServerRestart(t *testing.T) {
	for _, mode := range []string{"fast", "immediate"} {
		t.Run(mode, func(t *testing.T) {
			ctx := testContext(t)
			slot := newSlot(t, connString)
			conn := connect(t, connString)
			s := open(t, connString, slot, []string{"r"}, fast...)
			for i := range 10 {
				emit(t, conn, "r", strconv.Itoa(i))
			}
			got := collect(t, ctx, s, 4)
			if err := cluster.Restart(ctx, mode); err != nil {
				t.Fatal(err)
			}
			conn = connect(t, connString)
			for i := 10; i < 20; i++ {
				emit(t, conn, "r", strconv.Itoa(i))
			}
			emit(t, conn, "r", "end")
			seen := eventsUntil(t, ctx, s, "end")
			if seen.dead != 1 || seen.recovered != 1 {
				t.Errorf("saw %d Dead and %d Recovered events, want 1 each", seen.dead, seen.recovered)
			}
			checkAll(t, append(got, seen.payloads...), 20, 0)

			// Everything is acknowledged; restart again with no stream,
			// and count what a new stream gets again.
			if err := s.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if err := cluster.Restart(ctx, mode); err != nil {
				t.Fatal(err)
			}
			conn = connect(t, connString)
			emit(t, conn, "r", "after")
			s2 := open(t, connString, slot, []string{"r"}, fast...)
			again := eventsUntil(t, ctx, s2, "after")
			// Close marks the slot for saving, so a clean shutdown keeps
			// its position; a crash loses what no checkpoint saved.
			t.Logf("restart -m %s after Close: a new stream got %d of 21 acknowledged batches again", mode, len(again.payloads))
			if mode == "fast" && len(again.payloads) != 0 {
				t.Errorf("after Close and a clean shutdown, %d acknowledged batches came again; want 0", len(again.payloads))
			}
			checkAll(t, again.payloads, 0, 0)
		})
	}
}

// TestHeldBatchFastShutdown: a consumer holding a batch does not hold up a
// fast shutdown, and the held batch comes again afterwards.
func TestHeldBatchFastShutdown(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	for i := 1; i <= 3; i++ {
		emit(t, conn, "h", strconv.Itoa(i))
	}
	c := startChild(t, slot, "h", 2)
	var held string
	for held == "" {
		if l := c.line(t, ctx); strings.HasPrefix(l, "holding ") {
			held = strings.TrimPrefix(l, "holding ")
		}
	}
	// pg_ctl waits for the shutdown; a walsender waiting for the client to
	// confirm the held batch would make it time out (Restart's ctx).
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := cluster.Restart(rctx, "fast"); err != nil {
		t.Fatalf("fast shutdown with a held batch: %v", err)
	}
	c.kill()
	conn = connect(t, connString)
	waitReleased(t, conn, slot)
	// Batch 1 was acknowledged but may come again: the server saves
	// confirmed positions lazily. The held batch must come.
	s := open(t, connString, slot, []string{"h"}, fast...)
	for {
		ev := nextBatch(t, ctx, s)
		got := strconv.FormatUint(ev.LSN, 10)
		if got == held {
			if payloads(ev)[0] != "2" {
				t.Fatalf("held batch came back as %q", payloads(ev))
			}
			break
		}
		if payloads(ev)[0] != "1" {
			t.Fatalf("batch %q (LSN %s) came before the held batch %s", payloads(ev), got, held)
		}
		t.Logf("acknowledged batch 1 came again after the restart")
	}
}

// TestSlowConsumerOutlivesWalSenderTimeout: with wal_sender_timeout = 2s, a
// consumer pausing 5 s between batches keeps its connection: the stream
// answers the server while the consumer is busy.
func TestSlowConsumerOutlivesWalSenderTimeout(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	url := pgtest.Start(t, pgtest.WithLogicalReplication(), pgtest.WithSetting("wal_sender_timeout", "2s"))
	slot := newSlot(t, url)
	conn := connect(t, url)
	for i := range 3 {
		emit(t, conn, "slow", strconv.Itoa(i))
	}
	// The default status interval (10 s) is longer than the timeout: the
	// stream must shorten it by itself. A read-ahead of one batch makes the
	// stream stop reading during the pauses, so only its own status updates
	// keep the connection alive, not answers to the server's keepalives.
	s := open(t, url, slot, []string{"slow"}, durable.WithMaxPending(1, 1))
	pid := readSlot(t, conn, slot).pid
	for i := range 3 {
		ev := nextBatch(t, ctx, s)
		if got := payloads(ev); got[0] != strconv.Itoa(i) {
			t.Fatalf("batch %q, want %d", got, i)
		}
		if i < 2 {
			time.Sleep(5 * time.Second) // the consumer's pause is the scenario
		}
	}
	if now := readSlot(t, conn, slot).pid; now != pid {
		t.Fatalf("walsender changed from %d to %d: the connection was dropped", pid, now)
	}
}

// TestWalLevel: a server without wal_level = logical fails CreateSlot, Open
// and Emit (one message or several) with ErrWalLevel, which says how to
// change it; Emit writes nothing, and the caller's connection stays usable.
func TestWalLevel(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	url := pgtest.Start(t)
	err := durable.CreateSlot(ctx, url, "s")
	if !errors.Is(err, durable.ErrWalLevel) || !strings.Contains(err.Error(), "wal_level = logical") {
		t.Fatalf("CreateSlot: %v, want ErrWalLevel saying how to set it", err)
	}
	if _, err := durable.Open(ctx, url, "s", []string{"x"}); !errors.Is(err, durable.ErrWalLevel) {
		t.Fatalf("Open: %v, want ErrWalLevel", err)
	}
	conn := connect(t, url)
	before := currentLSN(t, conn)
	for _, n := range []int{1, 3} {
		msgs := make([]pgnotify.Message, n)
		for i := range msgs {
			msgs[i] = pgnotify.Message{Channel: "x", Payload: "lost"}
		}
		err := durable.Emit(ctx, conn, msgs...)
		if !errors.Is(err, durable.ErrWalLevel) {
			t.Fatalf("Emit of %d: %v, want ErrWalLevel", n, err)
		}
		t.Logf("Emit of %d: %v", n, err)
	}
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("the connection after Emit failed: %v", err)
	}
	if after := currentLSN(t, conn); after != before {
		t.Errorf("WAL moved from %v to %v: Emit wrote something", before, after)
	}
}

// TestSlotDroppedWhileReconnecting: a slot dropped while the stream is
// away ends the stream with ErrSlotMissing after Dead.
func TestSlotDroppedWhileReconnecting(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	s, err := durable.Open(ctx, connString, slot, []string{"d"},
		durable.WithReconnect(time.Second, time.Second)) // time to drop the slot before the retry
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1)", readSlot(t, conn, slot).pid); err != nil {
		t.Fatal(err)
	}
	waitReleased(t, conn, slot)
	if err := durable.DropSlot(ctx, connString, slot); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ctx, s); ev.Kind != pgnotify.Dead {
		t.Fatalf("first event %v, want Dead", ev.Kind)
	}
	if _, err := s.Next(ctx); !errors.Is(err, durable.ErrSlotMissing) {
		t.Fatalf("Next: %v, want ErrSlotMissing", err)
	}
	if _, err := s.Next(ctx); !errors.Is(err, durable.ErrSlotMissing) {
		t.Fatalf("Next again: %v, want ErrSlotMissing for good", err)
	}
	if err := durable.CreateSlot(ctx, connString, slot); err != nil { // for newSlot's cleanup
		t.Fatal(err)
	}
}

// collect returns the payloads of the next n batches; the last stays held.
func collect(t *testing.T, ctx context.Context, s *durable.Stream, n int) []string {
	t.Helper()
	var out []string
	for range n {
		out = append(out, payloads(nextBatch(t, ctx, s))...)
	}
	return out
}

// seen is what eventsUntil saw.
type seen struct {
	payloads        []string
	dead, recovered int
	deadErr         error
}

// eventsUntil reads events until a batch holding last (not included).
func eventsUntil(t *testing.T, ctx context.Context, s *durable.Stream, last string) seen {
	t.Helper()
	var out seen
	for {
		ev := next(t, ctx, s)
		switch ev.Kind {
		case pgnotify.Dead:
			out.dead++
			out.deadErr = ev.Err
		case pgnotify.Recovered:
			out.recovered++
		case pgnotify.Batch:
			for _, p := range payloads(ev) {
				if p == last {
					return out
				}
				out.payloads = append(out.payloads, p)
			}
		default:
			t.Fatalf("unexpected %v event", ev.Kind)
		}
	}
}

// checkAll checks that got holds each of 0..n-1 and wantDup more (repeats).
func checkAll(t *testing.T, got []string, n, wantDup int) {
	t.Helper()
	count := map[string]int{}
	for _, p := range got {
		count[p]++
	}
	dup := len(got) - len(count)
	for i := range n {
		if count[strconv.Itoa(i)] == 0 {
			t.Errorf("message %d lost (got %q)", i, got)
		}
	}
	if dup != wantDup {
		t.Errorf("%d duplicates, want %d (got %q)", dup, wantDup, got)
	}
}

// TestSlotInvalidated: a slot the server invalidates (it held more WAL than
// max_slot_wal_keep_size) ends the stream with ErrSlotInvalidated after Dead,
// and Open and RetainedWAL report it too.
func TestSlotInvalidated(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	setKeep := func(v string) {
		t.Helper()
		if _, err := conn.Exec(ctx, "ALTER SYSTEM SET max_slot_wal_keep_size = '"+v+"'"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
			t.Fatal(err)
		}
	}
	setKeep("1MB")
	t.Cleanup(func() { setKeep("-1") })

	s := open(t, connString, slot, []string{"inv"}, fast...)
	emit(t, conn, "inv", "held")
	nextBatch(t, ctx, s) // held: the slot cannot advance past it
	waitUntil(t, 30*time.Second, "the slot invalidated", func() bool {
		// Each checkpoint invalidates slots whose WAL is older than what
		// max_slot_wal_keep_size keeps; new segments make it so.
		for _, sql := range []string{"SELECT pg_switch_wal()", "SELECT pg_logical_emit_message(true, 'x', 'y')", "CHECKPOINT"} {
			if _, err := conn.Exec(ctx, sql); err != nil {
				t.Fatal(err)
			}
		}
		var status *string
		if err := conn.QueryRow(ctx, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&status); err != nil {
			t.Fatal(err)
		}
		return status != nil && *status == "lost"
	})
	if ev := next(t, ctx, s); ev.Kind != pgnotify.Dead {
		t.Fatalf("event %v, want Dead", ev.Kind)
	}
	if _, err := s.Next(ctx); !errors.Is(err, durable.ErrSlotInvalidated) {
		t.Fatalf("Next: %v, want ErrSlotInvalidated", err)
	}
	if _, err := durable.Open(ctx, connString, slot, []string{"inv"}); !errors.Is(err, durable.ErrSlotInvalidated) {
		t.Fatalf("Open: %v, want ErrSlotInvalidated", err)
	}
	if _, err := durable.RetainedWAL(ctx, connString, slot); !errors.Is(err, durable.ErrSlotInvalidated) {
		t.Fatalf("RetainedWAL: %v, want ErrSlotInvalidated", err)
	}
	err := durable.CreateSlot(ctx, connString, slot)
	if !errors.Is(err, durable.ErrSlotInvalidated) || !strings.Contains(err.Error(), "drop it") {
		t.Fatalf("CreateSlot on the invalidated slot: %v, want ErrSlotInvalidated saying to drop it", err)
	}
}
