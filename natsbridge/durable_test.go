package natsbridge_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
	"github.com/seed-c59d106d/pgnotify/natsbridge"
)

// emitAll emits txns transactions of per messages each on channel, in
// order, and returns their payloads in commit order.
func emitAll(t testing.TB, ctx context.Context, conn *pgx.Conn, channel string, from, txns, per int) []string {
	t.Helper()
	var all []string
	for i := from; i < from+txns; i++ {
		msgs := make([]pgnotify.Message, per)
		for j := range msgs {
			msgs[j] = pgnotify.Message{Channel: channel, Payload: fmt.Sprintf("t%04d-m%02d", i, j)}
			all = append(all, msgs[j].Payload)
		}
		if err := durable.Emit(ctx, conn, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	return all
}

// openStream opens slot on channel; closed when t ends.
func openStream(t testing.TB, ctx context.Context, slot, channel string) *durable.Stream {
	t.Helper()
	s, err := durable.Open(ctx, connString, slot, []string{channel}, durable.WithReconnect(20*time.Millisecond, 200*time.Millisecond), durable.WithManualAck())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// confirmedLSN returns the slot's confirmed_flush_lsn.
func confirmedLSN(t testing.TB, ctx context.Context, conn *pgx.Conn, slot string) uint64 {
	t.Helper()
	var lsn uint64
	err := conn.QueryRow(ctx, "SELECT (confirmed_flush_lsn - '0/0')::bigint FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&lsn)
	if err != nil {
		t.Fatal(err)
	}
	return lsn
}

func TestDurablePublishesEachMessageOnceWithItsID(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := startNATS(t)
	nc := connectNATS(t, ns)
	js, st := newJetStream(t, ctx, nc, "PGN", "pgnotify.>")
	slot := newSlot(t, ctx)
	s := openStream(t, ctx, slot, "invoices")
	producer := connect(t, ctx)
	want := emitAll(t, ctx, producer, "invoices", 0, 20, 5)

	bctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- natsbridge.Durable(bctx, s, js, natsbridge.WithDB("main")) }()
	waitFor(t, ctx, "every message in JetStream", func() bool { return streamMsgs(t, ctx, st) >= uint64(len(want)) })
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Durable = %v, want context.Canceled", err)
	}
	msgs := readAll(t, ctx, st)
	checkOnce(t, msgs, want)
	// Nats-Msg-Id is slot:commitLSN:index; one LSN per transaction.
	lsns := map[string]int{}
	for i, m := range msgs {
		id := m.Header.Get("Nats-Msg-Id")
		lsn := m.Header.Get(natsbridge.HeaderLSN)
		if wantID := fmt.Sprintf("%s:%s:%d", slot, lsn, i%5); id != wantID {
			t.Errorf("message %d: Nats-Msg-Id %q, want %q", i, id, wantID)
		}
		lsns[lsn]++
		if m.Subject != "pgnotify.invoices" || m.Header.Get(natsbridge.HeaderChannel) != "invoices" || m.Header.Get(natsbridge.HeaderDB) != "main" {
			t.Errorf("message %d: subject %s, headers %v", i, m.Subject, m.Header)
		}
	}
	if len(lsns) != 20 {
		t.Errorf("%d distinct LSNs, want one per transaction (20)", len(lsns))
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// JetStream refuses the batch (no stream captures its subject yet): the
// slot stays behind it while the bridge publishes again, and moves past it
// only once JetStream has it.
func TestDurableAcknowledgesOnlyWhatJetStreamHas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := startNATS(t)
	nc := connectNATS(t, ns)
	js, _ := newJetStream(t, ctx, nc, "OTHER", "other.>")
	slot := newSlot(t, ctx)
	s := openStream(t, ctx, slot, "invoices")
	producer := connect(t, ctx)
	want := emitAll(t, ctx, producer, "invoices", 0, 1, 3)
	var lsn uint64
	if err := producer.QueryRow(ctx, "SELECT (pg_current_wal_lsn() - '0/0')::bigint").Scan(&lsn); err != nil {
		t.Fatal(err)
	}

	var logs syncBuffer
	bctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- natsbridge.Durable(bctx, s, js, natsbridge.WithAckTimeout(200*time.Millisecond),
			natsbridge.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	}()
	waitFor(t, ctx, "a second attempt", func() bool { return strings.Contains(logs.String(), "attempt=2") })
	if got := confirmedLSN(t, ctx, producer, slot); got >= lsn {
		t.Fatalf("the slot confirmed %X while JetStream had none of the batch ending before %X", got, lsn)
	}
	st, err := js.CreateStream(ctx, jetstreamConfig("PGN", "pgnotify.>"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the batch in JetStream", func() bool { return streamMsgs(t, ctx, st) >= 3 })
	// The bridge acknowledges the batch only now.
	waitFor(t, ctx, "the slot to move past the batch", func() bool { return confirmedLSN(t, ctx, producer, slot) >= lsn })
	stop()
	<-done
	checkOnce(t, readAll(t, ctx, st), want)
}

// syncBuffer is a bytes.Buffer safe for a logger's goroutine and a test's.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestDurableCancelledWhileJetStreamUnreachableKeepsTheBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := startNATS(t)
	nc := connectNATS(t, ns)
	js, _ := newJetStream(t, ctx, nc, "OTHER", "other.>") // nothing captures pgnotify.>
	slot := newSlot(t, ctx)
	s := openStream(t, ctx, slot, "invoices")
	producer := connect(t, ctx)
	want := emitAll(t, ctx, producer, "invoices", 0, 1, 3)

	var logs syncBuffer
	bctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- natsbridge.Durable(bctx, s, js, natsbridge.WithAckTimeout(200*time.Millisecond),
			natsbridge.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	}()
	waitFor(t, ctx, "a second attempt", func() bool { return strings.Contains(logs.String(), "attempt=2") })
	stop()
	if err := <-done; !errors.Is(err, natsbridge.ErrUnpublished) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Durable = %v, want ErrUnpublished and context.Canceled", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}

	again := openStream(t, ctx, slot, "invoices")
	for {
		ev, err := again.Next(ctx)
		if err != nil {
			t.Fatalf("Next after reopening: %v (the batch JetStream never acknowledged was lost)", err)
		}
		if ev.Kind != pgnotify.Batch {
			continue
		}
		var got []string
		for _, n := range ev.Notifications {
			got = append(got, n.Payload)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("first batch after reopening = %q, want %q", got, want)
		}
		return
	}
}

func TestDurableNeedsManualAck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := startNATS(t)
	nc := connectNATS(t, ns)
	js, _ := newJetStream(t, ctx, nc, "PGN", "pgnotify.>")
	slot := newSlot(t, ctx)
	s, err := durable.Open(ctx, connString, slot, []string{"invoices"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close(context.Background()) }()
	if err := natsbridge.Durable(ctx, s, js); !errors.Is(err, natsbridge.ErrNeedsManualAck) {
		t.Fatalf("Durable on a stream without WithManualAck = %v, want ErrNeedsManualAck", err)
	}
}
