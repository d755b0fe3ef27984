package durable_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
)

// TestBacklogInCommitOrder: what is emitted while no stream is open arrives
// after Open, one batch per transaction, in commit order (not begin order),
// messages in order with exact duplicates kept; a rolled-back transaction and
// other channels deliver nothing.
func TestBacklogInCommitOrder(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	a, b := connect(t, connString), connect(t, connString)

	txA, err := a.Begin(ctx) // begins first, commits second
	if err != nil {
		t.Fatal(err)
	}
	emit(t, txA, "jobs", "a1")
	txB, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	emit(t, txB, "jobs", "b1", "b2")
	if err := txB.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	emit(t, txA, "jobs", "a2")
	emit(t, txA, "other", "not for us")
	if err := txA.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	txC, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	emit(t, txC, "jobs", "rolled back")
	if err := txC.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	emit(t, a, "other", "not for us either")
	emit(t, a, "jobs", "e1", "e2", "e2", "")
	emit(t, a, "jobs", "sentinel")

	s := open(t, connString, slot, []string{"jobs"}, fast...)
	want := [][]string{{"b1", "b2"}, {"a1", "a2"}, {"e1", "e2", "e2", ""}, {"sentinel"}}
	var last uint64
	for i, w := range want {
		ev := nextBatch(t, ctx, s)
		if got := payloads(ev); !slices.Equal(got, w) {
			t.Fatalf("batch %d = %q, want %q", i, got, w)
		}
		for _, n := range ev.Notifications {
			if n.Channel != "jobs" || n.PID != 0 {
				t.Errorf("batch %d: notification %+v, want channel jobs and PID 0", i, n)
			}
		}
		if ev.LSN <= last || ev.Conn != nil {
			t.Errorf("batch %d: LSN %d after %d, Conn %v: want increasing LSNs and no Conn", i, ev.LSN, last, ev.Conn)
		}
		last = ev.LSN
	}
}

// TestLargePayload: a 1 MiB payload of every byte value, NUL included, comes
// back unchanged; one over MaxPayloadLen is refused before anything is sent.
func TestLargePayload(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i)
	}
	emit(t, conn, "big", string(big), "small")
	s := open(t, connString, slot, []string{"big"}, fast...)
	ev := nextBatch(t, ctx, s)
	if len(ev.Notifications) != 2 || !bytes.Equal([]byte(ev.Notifications[0].Payload), big) ||
		ev.Notifications[1].Payload != "small" {
		t.Fatalf("got %d notifications; the 1 MiB payload did not come back unchanged", len(ev.Notifications))
	}
}

// TestOtherChannelsAdvanceSlot: a stream skips other channels' messages and
// still moves the slot past them, so the server can recycle their WAL.
func TestOtherChannelsAdvanceSlot(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	s := open(t, connString, slot, []string{"mine"}, fast...)
	before := readSlot(t, conn, slot).confirmed
	for i := range 20 {
		emit(t, conn, "theirs", strconv.Itoa(i))
	}
	end := currentLSN(t, conn)
	waitUntil(t, 30*time.Second, "confirmed_flush_lsn to pass the skipped messages", func() bool {
		return readSlot(t, conn, slot).confirmed >= end
	})
	if after := readSlot(t, conn, slot).confirmed; after <= before {
		t.Fatalf("confirmed_flush_lsn %v did not move from %v", after, before)
	}
	emit(t, conn, "mine", "only this")
	if ev := nextBatch(t, ctx, s); !slices.Equal(payloads(ev), []string{"only this"}) {
		t.Fatalf("got %q, want only the stream's channel", payloads(ev))
	}
}

// TestAckOnNextAndClose: a batch is confirmed only once the consumer asks
// for the next one or closes the stream, and Close returns after the server
// has it and has released the slot. A reopened stream starts after it.
func TestAckOnNextAndClose(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	emit(t, conn, "q", "1")
	emit(t, conn, "q", "2")
	emit(t, conn, "q", "3")

	s, err := durable.Open(ctx, connString, slot, []string{"q"}, durable.WithStatusInterval(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	first := nextBatch(t, ctx, s)
	// Held: status updates go out, yet the slot stays before it. The stream
	// reports what it received as written: once that passes a later
	// transaction, updates sent after the batch arrived have been processed.
	emit(t, conn, "elsewhere", "x")
	probe := currentLSN(t, conn)
	waitUntil(t, 30*time.Second, "a status update past the held batch", func() bool {
		return reportedWrite(t, conn, slot) >= probe
	})
	if c := readSlot(t, conn, slot).confirmed; c > pglogrepl.LSN(first.LSN) {
		t.Fatalf("slot confirmed %v while batch %v was held", c, pglogrepl.LSN(first.LSN))
	}
	second := nextBatch(t, ctx, s) // acknowledges the first
	waitUntil(t, 30*time.Second, "the first batch confirmed", func() bool {
		return readSlot(t, conn, slot).confirmed > pglogrepl.LSN(first.LSN)
	})
	if err := s.Close(ctx); err != nil { // acknowledges the second
		t.Fatal(err)
	}
	if info := readSlot(t, conn, slot); info.active || info.confirmed <= pglogrepl.LSN(second.LSN) {
		t.Fatalf("after Close: slot active=%v confirmed %v; want released and past %v",
			info.active, info.confirmed, pglogrepl.LSN(second.LSN))
	}
	if _, err := s.Next(ctx); !errors.Is(err, pgnotify.ErrClosed) {
		t.Fatalf("Next after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s2 := open(t, connString, slot, []string{"q"}, fast...)
	if ev := nextBatch(t, ctx, s2); !slices.Equal(payloads(ev), []string{"3"}) {
		t.Fatalf("reopened stream starts with %q, want [3]", payloads(ev))
	}
}

// TestCloseWhileNextBlocked: Close from another goroutine ends a blocked
// Next with ErrClosed.
func TestCloseWhileNextBlocked(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	s, err := durable.Open(ctx, connString, slot, []string{"idle"}, fast...)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := s.Next(ctx)
		errc <- err
	}()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, pgnotify.ErrClosed) {
		t.Fatalf("blocked Next returned %v, want ErrClosed", err)
	}
	if readSlot(t, connect(t, connString), slot).active {
		t.Fatal("slot still active after Close returned")
	}
}

// TestEventsIterator: Events yields batches and stops when the loop breaks;
// after Close it yields ErrClosed once, last.
func TestEventsIterator(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	emit(t, conn, "it", "1")
	emit(t, conn, "it", "2")
	s := open(t, connString, slot, []string{"it"}, fast...)
	var got []string
	for ev, err := range s.Events(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, payloads(ev)...)
		if len(got) == 2 {
			break
		}
	}
	if !slices.Equal(got, []string{"1", "2"}) {
		t.Fatalf("got %q", got)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, err := range s.Events(ctx) {
		n++
		if !errors.Is(err, pgnotify.ErrClosed) {
			t.Fatalf("Events after Close yielded %v", err)
		}
	}
	if n != 1 {
		t.Fatalf("Events after Close yielded %d times, want 1", n)
	}
}

// TestSlotInUse: a second stream on a slot fails Open with ErrSlotInUse.
func TestSlotInUse(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	open(t, connString, slot, []string{"x"}, fast...)
	_, err := durable.Open(ctx, connString, slot, []string{"x"})
	if !errors.Is(err, durable.ErrSlotInUse) {
		t.Fatalf("second Open: %v, want ErrSlotInUse", err)
	}
}

// TestSlotMissing: Open never creates a slot; its error names CreateSlot.
// DropSlot and RetainedWAL report a missing slot the same way.
func TestSlotMissing(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	_, err := durable.Open(ctx, connString, "no_such_slot", []string{"x"})
	if !errors.Is(err, durable.ErrSlotMissing) || !strings.Contains(err.Error(), "CreateSlot") {
		t.Fatalf("Open: %v, want ErrSlotMissing naming CreateSlot", err)
	}
	var n int
	if err := connect(t, connString).QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'no_such_slot'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("Open created the slot (count %d, %v)", n, err)
	}
	if err := durable.DropSlot(ctx, connString, "no_such_slot"); !errors.Is(err, durable.ErrSlotMissing) {
		t.Fatalf("DropSlot: %v, want ErrSlotMissing", err)
	}
	if _, err := durable.RetainedWAL(ctx, connString, "no_such_slot"); !errors.Is(err, durable.ErrSlotMissing) {
		t.Fatalf("RetainedWAL: %v, want ErrSlotMissing", err)
	}
}

// TestCreateSlotIdempotent: CreateSlot on an existing pgoutput slot is a
// no-op; on a slot of another plugin it fails.
func TestCreateSlotIdempotent(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	if err := durable.CreateSlot(ctx, connString, slot); err != nil {
		t.Fatalf("second CreateSlot: %v", err)
	}
	conn := connect(t, connString)
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot('td_slot', 'test_decoding')"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), "SELECT pg_drop_replication_slot('td_slot')") })
	if err := durable.CreateSlot(ctx, connString, "td_slot"); err == nil || !strings.Contains(err.Error(), "pgoutput") {
		t.Fatalf("CreateSlot over a test_decoding slot: %v, want an error naming pgoutput", err)
	}
	if _, err := durable.Open(ctx, connString, "td_slot", []string{"x"}); err == nil {
		t.Fatal("Open on a test_decoding slot succeeded")
	}
}

// TestRetainedWAL: the WAL a slot holds grows while nobody reads it.
func TestRetainedWAL(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	before, err := durable.RetainedWAL(ctx, connString, slot)
	if err != nil {
		t.Fatal(err)
	}
	emit(t, connect(t, connString), "r", strings.Repeat("x", 256<<10))
	after, err := durable.RetainedWAL(ctx, connString, slot)
	if err != nil {
		t.Fatal(err)
	}
	if after < before+256<<10 {
		t.Fatalf("RetainedWAL went from %d to %d bytes after a 256 KiB message", before, after)
	}
}

// TestNoReplicationRole: a role without REPLICATION fails Open and
// CreateSlot with ErrNoReplication.
func TestNoReplicationRole(t *testing.T) {
	ctx := testContext(t)
	conn := connect(t, connString)
	if _, err := conn.Exec(ctx, "CREATE ROLE durable_norepl LOGIN"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), "DROP ROLE durable_norepl") })
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		t.Fatal(err)
	}
	url := strings.Replace(connString, "postgres@", "durable_norepl@", 1)
	if _, err := pgx.ParseConfig(url); err != nil || cfg.User == "durable_norepl" {
		t.Fatalf("bad test URL %q: %v", url, err)
	}
	if _, err := durable.Open(ctx, url, "any_slot", []string{"x"}); !errors.Is(err, durable.ErrNoReplication) {
		t.Fatalf("Open: %v, want ErrNoReplication", err)
	}
	if err := durable.CreateSlot(ctx, url, "any_slot"); !errors.Is(err, durable.ErrNoReplication) {
		t.Fatalf("CreateSlot: %v, want ErrNoReplication", err)
	}
	var pgErr *pgconn.PgError
	_, err = durable.Open(ctx, url, "any_slot", []string{"x"})
	if !errors.As(err, &pgErr) {
		t.Fatalf("the server's error is not reachable: %v", err)
	}
}

// TestBackpressure: with a read-ahead of two batches, a long backlog still
// comes whole and in order, and the slot advances as it is acknowledged.
func TestBackpressure(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	const n = 200
	for i := range n {
		emit(t, conn, "bp", strconv.Itoa(i), strings.Repeat("p", 1000))
	}
	s := open(t, connString, slot, []string{"bp"}, append(fast, durable.WithMaxPending(2, 1500))...)
	var lsns []uint64
	for i := range n {
		ev := nextBatch(t, ctx, s)
		if got := payloads(ev)[0]; got != strconv.Itoa(i) {
			t.Fatalf("batch %d is %q", i, got)
		}
		lsns = append(lsns, ev.LSN)
	}
	next := make(chan error, 1)
	go func() { _, err := s.Next(ctx); next <- err }() // acknowledges the last
	waitUntil(t, 30*time.Second, "the whole backlog confirmed", func() bool {
		return readSlot(t, conn, slot).confirmed > pglogrepl.LSN(lsns[n-1])
	})
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-next; !errors.Is(err, pgnotify.ErrClosed) {
		t.Fatal(err)
	}
}
