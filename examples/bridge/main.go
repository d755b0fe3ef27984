// Command bridge shows package natsbridge: one process listens to
// PostgreSQL and publishes every notification on NATS, where any number of
// consumers subscribe with subject wildcards. Mid-way the bridge's backend is
// terminated: consumers see a dead and a recovered event on
// pgnotify._events, and the bridge goes on.
//
//	go run ./examples/bridge
//
// It uses $DATABASE_URL when set; otherwise it starts a throwaway
// PostgreSQL server from the installed binaries and removes it at the end.
// The NATS server runs inside the program (internal/natstmp), storing in a
// temporary directory it removes at the end.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/natstmp"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
	"github.com/seed-c59d106d/pgnotify/natsbridge"
)

func main() {
	log.SetFlags(0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	if pgtmp.EnvURL() == "" {
		fmt.Println("DATABASE_URL is not set: starting a throwaway PostgreSQL server")
	}
	url, stopPG, err := pgtmp.FromEnv(ctx)
	if err != nil {
		return err
	}
	defer stopPG()
	ns, err := natstmp.Start("")
	if err != nil {
		return err
	}
	defer ns.Stop()

	// Two consumers, as two services of a fleet would be: one for EU and US
	// orders only, one for everything, events included.
	orders, err := consumer(ns.URL(), "orders", "pgnotify.orders.*")
	if err != nil {
		return err
	}
	defer orders.nc.Close()
	all, err := consumer(ns.URL(), "audit ", "pgnotify.>")
	if err != nil {
		return err
	}
	defer all.nc.Close()

	// The bridge: one PostgreSQL connection for the whole fleet.
	listener, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	if err := pgnotify.Listen(ctx, listener, "orders.eu", "orders.us", "stock"); err != nil {
		return err
	}
	m := pgnotify.NewManager(pgnotify.WithReconnect(pgnotify.Redial, 50*time.Millisecond, time.Second))
	defer m.Close(context.WithoutCancel(ctx))
	if err := m.Add(ctx, listener); err != nil {
		return err
	}
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		return err
	}
	defer nc.Close()
	bctx, stopBridge := context.WithCancel(ctx)
	defer stopBridge()
	bridged := make(chan error, 1)
	go func() { bridged <- natsbridge.Notify(bctx, m, nc) }()

	producer, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer producer.Close(context.WithoutCancel(ctx))
	send := func(msgs ...pgnotify.Message) error {
		for _, msg := range msgs {
			fmt.Printf("producer: NOTIFY %s, '%s'\n", msg.Channel, msg.Payload)
		}
		return pgnotify.Notify(ctx, producer, msgs...)
	}

	fmt.Println("\n1. The producer notifies three channels; the bridge publishes on pgnotify.<channel>.")
	if err := send(pgnotify.Message{Channel: "orders.eu", Payload: "order 1"},
		pgnotify.Message{Channel: "stock", Payload: "sku 7: 3 left"},
		pgnotify.Message{Channel: "orders.us", Payload: "order 2"}); err != nil {
		return err
	}
	if err := expect(ctx, orders, 2); err != nil {
		return err
	}
	if err := expect(ctx, all, 3); err != nil {
		return err
	}

	fmt.Println("\n2. The bridge's backend is terminated (pg_terminate_backend): dead, then recovered.")
	if _, err := producer.Exec(ctx, "SELECT pg_terminate_backend($1)", listener.PgConn().PID()); err != nil {
		return err
	}
	if err := expect(ctx, all, 2); err != nil {
		return err
	}

	fmt.Println("\n3. The bridge listens again; the producer goes on.")
	if err := send(pgnotify.Message{Channel: "orders.eu", Payload: "order 3"}); err != nil {
		return err
	}
	if err := expect(ctx, orders, 1); err != nil {
		return err
	}
	if err := expect(ctx, all, 1); err != nil {
		return err
	}

	stopBridge()
	if err := <-bridged; !errors.Is(err, context.Canceled) {
		return err
	}
	fmt.Println("\nThe bridge stopped; nothing is left running.")
	return nil
}

// A sub is one consumer: a NATS connection of its own, as a separate
// service would have.
type sub struct {
	nc  *nats.Conn
	got chan struct{} // receives once per message
}

// consumer subscribes to subject and prints what it gets.
func consumer(natsURL, name, subject string) (*sub, error) {
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return nil, err
	}
	c := &sub{nc: nc, got: make(chan struct{}, 100)}
	_, err = nc.Subscribe(subject, func(m *nats.Msg) {
		if ch := m.Header.Get(natsbridge.HeaderChannel); ch != "" {
			fmt.Printf("  %s [%s] %s: %s (pid %s)\n", name, subject, m.Subject, m.Data, m.Header.Get(natsbridge.HeaderPID))
		} else {
			fmt.Printf("  %s [%s] %s: %s\n", name, subject, m.Subject, m.Data)
		}
		c.got <- struct{}{}
	})
	if err == nil {
		err = nc.Flush() // the subscription is in place before anything is sent
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// expect waits for n messages to c.
func expect(ctx context.Context, c *sub, n int) error {
	for range n {
		select {
		case <-c.got:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
