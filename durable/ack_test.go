package durable_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
)

// TestSecondNextFailsAtOnce: while one goroutine is in Next, a second one
// gets an error at once, not a batch (which would acknowledge the first
// goroutine's batch) and not a wait.
func TestSecondNextFailsAtOnce(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	s := open(t, connString, slot, []string{"two"}, fast...)
	emit(t, conn, "two", "1")
	nextBatch(t, ctx, s)

	first := make(chan error, 1)
	go func() {
		_, err := s.Next(ctx)
		first <- err
	}()
	waitUntil(t, 30*time.Second, "the first goroutine in Next", func() bool { return durable.InNext(s) })
	// Without the check this Next would wait with the first; the short
	// ctx only bounds the failure.
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ev, err := s.Next(short)
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Next = %v event, %v; want an error at once", ev.Kind, err)
	}
	t.Logf("second Next: %v", err)
	emit(t, conn, "two", "2")
	if err := <-first; err != nil {
		t.Fatalf("first Next: %v", err)
	}
}

// TestManualAck: with WithManualAck, Next acknowledges nothing; Ack in any
// order advances the slot only past batches that are all acknowledged;
// errors for an LSN never handed out and on a stream without manual acks.
func TestManualAck(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	s := open(t, connString, slot, []string{"m"}, durable.WithManualAck())
	for i := 1; i <= 4; i++ {
		emit(t, conn, "m", strconv.Itoa(i))
	}
	var lsn [5]uint64
	for i := 1; i <= 4; i++ {
		lsn[i] = nextBatch(t, ctx, s).LSN
	}
	start := readSlot(t, conn, slot).confirmed
	if err := s.Ack(lsn[2]); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(lsn[4]); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(lsn[4]); err != nil {
		t.Fatalf("Ack again: %v, want nil", err)
	}
	if err := s.Ack(lsn[4] + 1); err == nil {
		t.Fatal("Ack of an LSN never handed out succeeded")
	}
	if got := s.Stats().AckedLSN; pglogrepl.LSN(got) > start {
		t.Fatalf("acknowledged position %v moved past %v with batch 1 not acknowledged", pglogrepl.LSN(got), start)
	}
	if err := s.Ack(lsn[1]); err != nil {
		t.Fatal(err)
	}
	// 1 and 2 are done, 3 is not: the slot moves past 2, not 4.
	waitUntil(t, 30*time.Second, "batch 2 confirmed", func() bool {
		return readSlot(t, conn, slot).confirmed > pglogrepl.LSN(lsn[2])
	})
	if got := readSlot(t, conn, slot).confirmed; got > pglogrepl.LSN(lsn[3]) {
		t.Fatalf("slot confirmed %v, past unacknowledged batch 3 (%v)", got, pglogrepl.LSN(lsn[3]))
	}
	if err := s.Ack(lsn[3]); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "batch 4 confirmed", func() bool {
		return readSlot(t, conn, slot).confirmed > pglogrepl.LSN(lsn[4])
	})

	auto := open(t, connString, newSlot(t, connString), []string{"m"})
	if err := auto.Ack(lsn[1]); err == nil {
		t.Fatal("Ack on a stream without WithManualAck succeeded")
	}
}

// TestParallelConsumerKilled: a consumer process handing batches to four
// workers that acknowledge them out of order, one worker holding its batch,
// is killed with SIGKILL. A new stream gets back the held batch and what
// followed it (the slot keeps one position: batches acknowledged after an
// unacknowledged one come again too), and nothing before it.
func TestParallelConsumerKilled(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	const n, hold = 12, 7
	for i := 1; i <= n; i++ {
		emit(t, conn, "par", strconv.Itoa(i))
	}
	c := startChildMode(t, slot, "par", hold, "parallel")
	acked := map[uint64]bool{}
	var held uint64
	for len(acked) < n-1 || held == 0 {
		f := strings.Fields(c.line(t, ctx))
		lsn, _ := strconv.ParseUint(f[len(f)-1], 10, 64)
		switch f[0] {
		case "acked":
			acked[lsn] = true
		case "holding":
			held = lsn
		default:
			t.Fatalf("consumer: %s", strings.Join(f, " "))
		}
	}
	// Every batch before the held one is acknowledged: the slot must reach
	// it, promptly, before the kill.
	waitUntil(t, 30*time.Second, "the slot at the held batch", func() bool {
		return readSlot(t, conn, slot).confirmed > pglogrepl.LSN(prevLSN(acked, held))
	})
	c.kill()
	waitReleased(t, conn, slot)

	emit(t, conn, "par", "end")
	s := open(t, connString, slot, []string{"par"}, fast...)
	var got []string
	for {
		ev := nextBatch(t, ctx, s)
		p := payloads(ev)[0]
		if p == "end" {
			break
		}
		if ev.LSN < held {
			t.Errorf("batch %s (LSN %d) before the held batch came again", p, ev.LSN)
		}
		got = append(got, p)
	}
	want := []string{}
	for i := hold; i <= n; i++ {
		want = append(want, strconv.Itoa(i))
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("after the kill got %q, want %q", got, want)
	}
	t.Logf("after the kill: the held batch and %d batches acknowledged after it came again; none before it", len(got)-1)
}

// prevLSN returns the highest LSN in acked below lsn.
func prevLSN(acked map[uint64]bool, lsn uint64) uint64 {
	var p uint64
	for l := range acked {
		if l < lsn {
			p = max(p, l)
		}
	}
	return p
}

// TestAckReachesServerPromptly: at the default settings (a 10 s status
// interval), the batch a consumer process acknowledged by asking for the
// next reaches the server well before the interval, so a SIGKILL then brings
// back only the batch it held, not the work it had finished.
func TestAckReachesServerPromptly(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	const n = 20
	for i := 1; i <= n; i++ {
		emit(t, conn, "prompt", strconv.Itoa(i))
	}
	c := startChildMode(t, slot, "prompt", n, "default")
	var prev, held uint64
	for held == 0 {
		f := strings.Fields(c.line(t, ctx))
		switch f[0] {
		case "batch":
			if f[2] == strconv.Itoa(n-1) {
				prev, _ = strconv.ParseUint(f[1], 10, 64)
			}
		case "holding":
			held, _ = strconv.ParseUint(f[1], 10, 64)
		default:
			t.Fatalf("consumer: %s", strings.Join(f, " "))
		}
	}
	// Half the status interval: an acknowledgement that waited for the
	// interval would not be there. Not fatal, so that the count below shows
	// what a crash costs either way.
	if !waitFor(5*time.Second, func() bool { return readSlot(t, conn, slot).confirmed > pglogrepl.LSN(prev) }) {
		got := readSlot(t, conn, slot).confirmed
		t.Errorf("5 s after the consumer asked for batch %d, the slot is at %v, before batch %d (%v)",
			n, got, n-1, pglogrepl.LSN(prev))
	}
	c.kill()
	waitReleased(t, conn, slot)
	emit(t, conn, "prompt", "end")
	s := open(t, connString, slot, []string{"prompt"}, fast...)
	again := 0
	for {
		ev := nextBatch(t, ctx, s)
		if payloads(ev)[0] == "end" {
			break
		}
		again++
	}
	t.Logf("after a SIGKILL with batch %d held: %d batches came again", n, again)
	if again != 1 {
		t.Errorf("%d batches came again, want 1 (the held batch)", again)
	}
}

// TestStats: Stats counts batches, messages and reconnects, and reports the
// acknowledged position and the lag behind the server's WAL end.
func TestStats(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	s := open(t, connString, slot, []string{"st"}, fast...)
	for i := range 3 {
		emit(t, conn, "st", strconv.Itoa(i), "x")
	}
	emit(t, conn, "other", "not counted")
	var last uint64
	for range 3 {
		last = nextBatch(t, ctx, s).LSN
	}
	st := s.Stats()
	if st.Batches != 3 || st.Messages != 6 || st.Reconnects != 0 {
		t.Fatalf("Stats = %+v, want 3 batches, 6 messages, no reconnect", st)
	}
	if st.AckedLSN >= last {
		t.Fatalf("AckedLSN %v past the held batch %v", pglogrepl.LSN(st.AckedLSN), pglogrepl.LSN(last))
	}
	if st.LagBytes <= 0 {
		t.Fatalf("LagBytes = %d with a batch held, want > 0", st.LagBytes)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1)", readSlot(t, conn, slot).pid); err != nil {
		t.Fatal(err)
	}
	emit(t, conn, "st", "after")
	for {
		ev := next(t, ctx, s)
		if ev.Kind == pgnotify.Batch && payloads(ev)[0] == "after" {
			break
		}
	}
	st = s.Stats()
	if st.Reconnects != 1 || st.Batches != 4 || st.AckedLSN <= last {
		t.Fatalf("after a reconnect Stats = %+v, want 1 reconnect, 4 batches, AckedLSN past %v", st, pglogrepl.LSN(last))
	}
}
