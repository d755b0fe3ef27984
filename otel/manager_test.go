package otel_test

import (
	"testing"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/seed-c59d106d/pgnotify"
	pgotel "github.com/seed-c59d106d/pgnotify/otel"
)

func TestRegisterManager(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = provider.Shutdown(ctx) })

	m := pgnotify.NewManager()
	t.Cleanup(func() { _ = m.Close(ctx) })
	reg, err := pgotel.RegisterManager(m, pgotel.WithMeterProvider(provider),
		pgotel.WithAttributes(attribute.String("pgnotify.name", "orders")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Unregister() })

	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatal(err)
	}
	if err := pgnotify.Listen(ctx, conn, "orders"); err != nil {
		t.Fatal(err)
	}
	if err := m.Add(ctx, conn); err != nil {
		t.Fatal(err)
	}
	sender, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sender.Close(ctx) })
	if err := pgnotify.Notify(ctx, sender, pgnotify.Message{Channel: "orders", Payload: "1"},
		pgnotify.Message{Channel: "orders", Payload: "2"}); err != nil {
		t.Fatal(err)
	}
	got := 0
	for got < 2 {
		ev, err := m.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got += len(ev.Notifications)
	}

	c := collect(t, reader)
	source := pgotel.SourceKey.String("manager")
	name := attribute.String("pgnotify.name", "orders")
	if v, ok := c.value("messaging.client.consumed.messages", source, name,
		attribute.String("messaging.system", "postgresql")); !ok || v != 2 {
		t.Errorf("messaging.client.consumed.messages = %d, %v; want 2", v, ok)
	}
	if v, ok := c.value("pgnotify.batches", source); !ok || v < 1 {
		t.Errorf("pgnotify.batches = %d, %v; want ≥ 1", v, ok)
	}
	if v, ok := c.value("pgnotify.connections", pgotel.StateKey.String("live")); !ok || v != 1 {
		t.Errorf("pgnotify.connections{live} = %d, %v; want 1", v, ok)
	}

	if v, ok := c.float("pgnotify.queue.usage"); !ok || v < 0 || v > 1 {
		t.Errorf("pgnotify.queue.usage = %v, %v; want a fraction", v, ok)
	}

	// A death is counted by cause.
	if _, err := sender.Exec(ctx, "SELECT pg_terminate_backend($1)", conn.PgConn().PID()); err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := m.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind == pgnotify.Dead {
			break
		}
	}
	c = collect(t, reader)
	if v, ok := c.value("pgnotify.connection.deaths", pgotel.CauseKey.String("57P01")); !ok || v != 1 {
		t.Errorf("pgnotify.connection.deaths{57P01} = %d, %v; want 1", v, ok)
	}
	if v, ok := c.value("pgnotify.connections", pgotel.StateKey.String("garbage")); !ok || v != 1 {
		t.Errorf("pgnotify.connections{garbage} = %d, %v; want 1", v, ok)
	}

	// After Unregister nothing more is observed.
	if err := reg.Unregister(); err != nil {
		t.Fatal(err)
	}
	if c := collect(t, reader); len(c) != 0 {
		t.Errorf("after Unregister: %d instruments observed", len(c))
	}
}

func TestRegisterNil(t *testing.T) {
	if _, err := pgotel.RegisterManager(nil); err == nil {
		t.Error("RegisterManager(nil) = nil error")
	}
}
