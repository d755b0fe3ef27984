package otel_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/bus"
	"github.com/seed-c59d106d/pgnotify/durable"
	pgotel "github.com/seed-c59d106d/pgnotify/otel"
)

func newReader(t *testing.T) (*sdkmetric.ManualReader, *sdkmetric.MeterProvider) {
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	return reader, provider
}

func dial(t *testing.T, ctx context.Context) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestRegisterBus(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	reader, provider := newReader(t)
	b := bus.New(func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, connString) })
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	reg, err := pgotel.RegisterBus(b, pgotel.WithMeterProvider(provider))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Unregister() })

	var subs []*bus.Subscription
	for range 2 {
		sub, err := b.Subscribe(ctx, []string{"otel_bus"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Close() })
		subs = append(subs, sub)
	}
	sender := dial(t, ctx)
	if err := pgnotify.Notify(ctx, sender, pgnotify.Message{Channel: "otel_bus", Payload: "x"}); err != nil {
		t.Fatal(err)
	}
	for _, sub := range subs {
		if ev, err := sub.Next(ctx); err != nil || ev.Kind != pgnotify.Batch {
			t.Fatalf("Next: %v, %v", ev.Kind, err)
		}
	}

	c := collect(t, reader)
	source := pgotel.SourceKey.String("bus")
	for name, want := range map[string]int64{
		"messaging.client.consumed.messages": 1,
		"pgnotify.bus.delivered":             2,
		"pgnotify.bus.dropped":               0,
		"pgnotify.bus.connected":             1,
		"pgnotify.bus.subscriptions":         2,
		"pgnotify.bus.channels":              1,
		"pgnotify.connection.deaths":         0,
	} {
		if v, ok := c.value(name, source); !ok || v != want {
			t.Errorf("%s = %d, %v; want %d", name, v, ok, want)
		}
	}
}

func TestRegisterStream(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	reader, provider := newReader(t)
	const slot = "otel_stream"
	if err := durable.CreateSlot(ctx, connString, slot); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = durable.DropSlot(context.Background(), connString, slot) })
	producer := dial(t, ctx)
	if err := durable.Emit(ctx, producer,
		pgnotify.Message{Channel: "otel_jobs", Payload: "1"},
		pgnotify.Message{Channel: "otel_jobs", Payload: "2"}); err != nil {
		t.Fatal(err)
	}
	s, err := durable.Open(ctx, connString, slot, []string{"otel_jobs"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	reg, err := pgotel.RegisterStream(s, pgotel.WithMeterProvider(provider),
		pgotel.WithAttributes(attribute.String("pgnotify.slot", slot)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Unregister() })
	ev, err := s.Next(ctx)
	if err != nil || ev.Kind != pgnotify.Batch {
		t.Fatalf("Next: %v, %v", ev.Kind, err)
	}

	source := pgotel.SourceKey.String("durable")
	slotAttr := attribute.String("pgnotify.slot", slot)
	c := collect(t, reader)
	if v, ok := c.value("messaging.client.consumed.messages", source, slotAttr); !ok || v != 2 {
		t.Errorf("messaging.client.consumed.messages = %d, %v; want 2", v, ok)
	}
	if v, ok := c.value("pgnotify.durable.batches", source); !ok || v != 1 {
		t.Errorf("pgnotify.durable.batches = %d, %v; want 1", v, ok)
	}
	if _, ok := c.value("pgnotify.durable.lag", source); !ok {
		t.Error("pgnotify.durable.lag not observed")
	}
	// Asking for the next batch acknowledges this one: the acknowledged
	// position reaches the batch's LSN.
	next, cancel := context.WithCancel(ctx)
	cancel()
	_, _ = s.Next(next)
	eventually(t, "the acknowledged LSN to reach the batch's", func() bool {
		v, ok := collect(t, reader).value("pgnotify.durable.acked_lsn", source)
		return ok && uint64(v) >= ev.LSN
	})
}
