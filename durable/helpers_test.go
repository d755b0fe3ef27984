package durable_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
	"github.com/seed-c59d106d/pgnotify/internal/testkit"
)

// connTimeout bounds opening and closing a connection or a stream in a
// cleanup, which must run even after the test's context has ended.
const connTimeout = 30 * time.Second

// fast makes a stream's acknowledgements and reconnections quick, so that
// tests wait for them briefly.
var fast = []durable.Option{
	durable.WithStatusInterval(50 * time.Millisecond),
	durable.WithReconnect(20*time.Millisecond, 500*time.Millisecond),
}

// requireServer, testContext, connect's close and waitUntil are
// internal/testkit's, shared with test/'s and cmd/pgnotify's tests.

func requireServer(t testing.TB) { t.Helper(); testkit.RequireServer(t) }

// testContext returns a context that ends after 2 minutes or when t ends.
func testContext(t testing.TB) context.Context { t.Helper(); return testkit.Context(t, 2*time.Minute) }

var slotSeq atomic.Int64

// newSlot creates a slot with a fresh name on the server at url and drops it
// when t ends, once no stream holds it.
func newSlot(t testing.TB, url string) string {
	t.Helper()
	requireServer(t)
	slot := fmt.Sprintf("t%d_%s", slotSeq.Add(1), strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name())))
	slot = slot[:min(len(slot), 63)]
	if err := durable.CreateSlot(testContext(t), url, slot); err != nil {
		t.Fatalf("CreateSlot: %v", err)
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(connTimeout)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), connTimeout)
			err := durable.DropSlot(ctx, url, slot)
			cancel()
			if err == nil {
				return
			}
			// A killed consumer's walsender may hold it a moment longer.
			if !errors.Is(err, durable.ErrSlotInUse) || time.Now().After(deadline) {
				t.Errorf("DropSlot(%s): %v", slot, err)
				return
			}
			<-tick.C
		}
	})
	return slot
}

// connect opens a connection to url and closes it when t ends. Commits are
// synchronous: a message committed before a server crash must survive it.
func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	requireServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), connTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { closeConn(conn) })
	if _, err := conn.Exec(ctx, "SET synchronous_commit = on"); err != nil {
		t.Fatal(err)
	}
	return conn
}

// closeConn closes conn and waits for pgconn's cleanup (bounded by
// connTimeout).
func closeConn(conn *pgx.Conn) { _ = testkit.CloseConn(conn) }

// emit emits payloads on channel in one Emit call on db: a transaction of
// its own on a connection, or part of db's if db is a pgx.Tx.
func emit(t testing.TB, db pgnotify.Execer, channel string, payloads ...string) {
	t.Helper()
	msgs := make([]pgnotify.Message, len(payloads))
	for i, p := range payloads {
		msgs[i] = pgnotify.Message{Channel: channel, Payload: p}
	}
	if err := durable.Emit(testContext(t), db, msgs...); err != nil {
		t.Fatalf("Emit: %v", err)
	}
}

// open opens a stream and closes it when t ends.
func open(t testing.TB, url, slot string, channels []string, opts ...durable.Option) *durable.Stream {
	t.Helper()
	s, err := durable.Open(testContext(t), url, slot, channels, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), connTimeout)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// next returns the stream's next event, failing t on error.
func next(t testing.TB, ctx context.Context, s *durable.Stream) pgnotify.Event {
	t.Helper()
	ev, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return ev
}

// nextBatch returns the next event, which must be a Batch.
func nextBatch(t testing.TB, ctx context.Context, s *durable.Stream) pgnotify.Event {
	t.Helper()
	ev := next(t, ctx, s)
	if ev.Kind != pgnotify.Batch {
		t.Fatalf("Next = %v event (err %v), want Batch", ev.Kind, ev.Err)
	}
	return ev
}

// payloads returns a batch's payloads.
func payloads(ev pgnotify.Event) []string {
	var out []string
	for _, n := range ev.Notifications {
		out = append(out, n.Payload)
	}
	return out
}

// slotInfo reads the slot's confirmed position and whether a walsender holds
// it.
type slotInfo struct {
	confirmed pglogrepl.LSN
	active    bool
	pid       int32
}

func readSlot(t testing.TB, conn *pgx.Conn, slot string) slotInfo {
	t.Helper()
	var info slotInfo
	var confirmed string
	var pid *int32
	err := conn.QueryRow(testContext(t), `SELECT confirmed_flush_lsn::text, active, active_pid
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&confirmed, &info.active, &pid)
	if err != nil {
		t.Fatalf("read slot %s: %v", slot, err)
	}
	if info.confirmed, err = pglogrepl.ParseLSN(confirmed); err != nil {
		t.Fatal(err)
	}
	if pid != nil {
		info.pid = *pid
	}
	return info
}

// currentLSN returns the server's current WAL insert position.
func currentLSN(t testing.TB, conn *pgx.Conn) pglogrepl.LSN {
	t.Helper()
	var s string
	if err := conn.QueryRow(testContext(t), "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

// waitUntil calls cond every few milliseconds until it returns true, and
// fails t if it has not within timeout. It runs in the test's goroutine.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitUntil(t, timeout, what, cond)
}

// waitFor calls cond every 10 ms until it returns true or timeout has
// passed, and reports whether it did.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// waitReleased waits until no walsender holds slot.
func waitReleased(t testing.TB, conn *pgx.Conn, slot string) {
	t.Helper()
	waitUntil(t, 30*time.Second, "slot "+slot+" released", func() bool { return !readSlot(t, conn, slot).active })
}

// reportedWrite returns the write position the slot's walsender last heard
// from its client (pg_stat_replication.write_lsn), 0 if none.
func reportedWrite(t testing.TB, conn *pgx.Conn, slot string) pglogrepl.LSN {
	t.Helper()
	var s *string
	err := conn.QueryRow(testContext(t), `SELECT r.write_lsn::text FROM pg_stat_replication r
		JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = $1`, slot).Scan(&s)
	if errors.Is(err, pgx.ErrNoRows) || s == nil {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	lsn, err := pglogrepl.ParseLSN(*s)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}
