package natsbridge_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify/natsbridge"
)

// produce emits txns transactions of per messages in a goroutine and
// returns a function that waits for it and returns every payload, in
// commit order.
func produce(t *testing.T, ctx context.Context, conn *pgx.Conn, channel string, txns, per int) func() []string {
	t.Helper()
	var wg sync.WaitGroup
	var all []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < txns && ctx.Err() == nil; i += 10 {
			all = append(all, emitAll(t, ctx, conn, channel, i, 10, per)...)
		}
	}()
	return func() []string {
		wg.Wait()
		return all
	}
}

func TestDurableBridgeKilledAndRestarted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	ns := startNATS(t)
	nc := connectNATS(t, ns)
	_, st := newJetStream(t, ctx, nc, "PGN", "pgnotify.>")
	slot := newSlot(t, ctx)
	producer := connect(t, ctx)
	wait := produce(t, ctx, producer, "invoices", 300, 10)

	first := startChild(t, ns.URL(), slot, "invoices")
	first.expect(t, ctx, "bridging")
	waitFor(t, ctx, "the first bridge to publish", func() bool { return streamMsgs(t, ctx, st) >= 500 })
	first.kill()
	killedAt := streamMsgs(t, ctx, st)

	second := startChild(t, ns.URL(), slot, "invoices")
	second.expect(t, ctx, "bridging")
	want := wait()
	waitFor(t, ctx, "every message in JetStream", func() bool { return streamMsgs(t, ctx, st) >= uint64(len(want)) })
	t.Logf("killed with %d of %d messages in JetStream", killedAt, len(want))
	second.kill()
	checkOnce(t, readAll(t, ctx, st), want)
}

func TestDurableNATSRestartedMidStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	ns := startNATS(t)
	nc := connectNATS(t, ns)
	js, st := newJetStream(t, ctx, nc, "PGN", "pgnotify.>")
	slot := newSlot(t, ctx)
	s := openStream(t, ctx, slot, "invoices")
	producer := connect(t, ctx)
	wait := produce(t, ctx, producer, "invoices", 300, 10)

	bctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- natsbridge.Durable(bctx, s, js, natsbridge.WithAckTimeout(time.Second)) }()
	waitFor(t, ctx, "the bridge to publish", func() bool { return streamMsgs(t, ctx, st) >= 500 })
	if err := ns.Restart(); err != nil {
		t.Fatal(err)
	}
	want := wait()
	waitFor(t, ctx, "every message in JetStream", func() bool { return streamMsgs(t, ctx, st) >= uint64(len(want)) })
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Durable = %v, want context.Canceled", err)
	}
	checkOnce(t, readAll(t, ctx, st), want)
}

func TestDurableSecondBridgeTakesOver(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	ns := startNATS(t)
	nc := connectNATS(t, ns)
	_, st := newJetStream(t, ctx, nc, "PGN", "pgnotify.>")
	slot := newSlot(t, ctx)
	producer := connect(t, ctx)

	first := startChild(t, ns.URL(), slot, "invoices")
	first.expect(t, ctx, "bridging")
	second := startChild(t, ns.URL(), slot, "invoices")
	second.expect(t, ctx, "waiting")

	wait := produce(t, ctx, producer, "invoices", 300, 10)
	waitFor(t, ctx, "the first bridge to publish", func() bool { return streamMsgs(t, ctx, st) >= 500 })
	first.kill()
	second.expect(t, ctx, "bridging")
	want := wait()
	waitFor(t, ctx, "every message in JetStream", func() bool { return streamMsgs(t, ctx, st) >= uint64(len(want)) })
	second.kill()
	checkOnce(t, readAll(t, ctx, st), want)
}

func TestDurableStopsOnCancelAndReleasesTheSlot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ns := startNATS(t)
	nc := connectNATS(t, ns)
	js, _ := newJetStream(t, ctx, nc, "PGN", "pgnotify.>")
	slot := newSlot(t, ctx)
	s := openStream(t, ctx, slot, "invoices")
	admin := connect(t, ctx)

	bctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- natsbridge.Durable(bctx, s, js) }()
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Durable = %v, want context.Canceled", err)
	}
	// Durable leaves the stream open: its caller closes it.
	var active bool
	if err := admin.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active); err != nil || !active {
		t.Fatalf("slot active = %v (%v) after Durable returned, want true: Durable must not close the stream", active, err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := admin.QueryRow(ctx, "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&active); err != nil || active {
		t.Fatalf("slot active = %v (%v) after Close, want false", active, err)
	}
	// The leak check after the tests finds any goroutine Durable left.
}
