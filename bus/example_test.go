package bus_test

import (
	"context"
	"fmt"
	"log"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/bus"
)

// Example serves two subscriptions on overlapping channels over one
// connection.
func Example() {
	ctx := context.Background()
	b := bus.New(func(ctx context.Context) (*pgx.Conn, error) {
		return pgx.Connect(ctx, exampleURL)
	})
	defer b.Close(ctx)

	// Subscribe returns once the channels are listened: nothing sent
	// after it can be missed.
	orders, err := b.Subscribe(ctx, []string{"orders"})
	if err != nil {
		log.Fatal(err)
	}
	defer orders.Close()
	audit, err := b.Subscribe(ctx, []string{"orders", "Jobs"}, bus.WithBuffer(10000))
	if err != nil {
		log.Fatal(err)
	}
	defer audit.Close()

	sender, err := pgx.Connect(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer sender.Close(ctx)
	err = pgnotify.Notify(ctx, sender,
		pgnotify.Message{Channel: "orders", Payload: "order 1"},
		pgnotify.Message{Channel: "Jobs", Payload: "job 1"})
	if err != nil {
		log.Fatal(err)
	}

	for name, s := range map[string]*bus.Subscription{"orders": orders, "audit": audit} {
		for got := 0; got < len(s.Channels()); {
			ev, err := s.Next(ctx)
			if err != nil {
				log.Fatal(err)
			}
			for _, n := range ev.Notifications {
				fmt.Printf("%s: %s %s\n", name, n.Channel, n.Payload)
				got++
			}
		}
	}
	// Unordered output:
	// orders: orders order 1
	// audit: orders order 1
	// audit: Jobs job 1
}

// ExampleSubscription_Events handles every kind of event a subscription
// yields.
func ExampleSubscription_Events() {
	ctx := context.Background()
	b := bus.New(func(ctx context.Context) (*pgx.Conn, error) {
		return pgx.Connect(ctx, exampleURL)
	})
	defer b.Close(ctx)
	sub, err := b.Subscribe(ctx, []string{"invalidate"}, bus.WithBuffer(64))
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	sender, err := pgx.Connect(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer sender.Close(ctx)
	if err := pgnotify.Notify(ctx, sender, pgnotify.Message{Channel: "invalidate", Payload: "user:42"}); err != nil {
		log.Fatal(err)
	}

	for ev, err := range sub.Events(ctx) {
		if err != nil {
			log.Fatal(err) // ErrClosed once the subscription or the Bus is closed
		}
		switch ev.Kind {
		case pgnotify.Batch:
			for _, n := range ev.Notifications {
				fmt.Println("invalidate", n.Payload) // n is shared: read-only
			}
		case pgnotify.Lagged:
			// The reader fell behind: ev.Dropped notifications were lost.
			// Invalidate everything.
		case pgnotify.Dead:
			// The Bus's connection died: what is sent until Recovered is lost.
		case pgnotify.Recovered:
			// Listening again: resynchronise from the application's tables.
		}
		if ev.Kind == pgnotify.Batch {
			break // one is enough for the example
		}
	}
	// Output:
	// invalidate user:42
}

// ExampleNew_pool gives a Bus its connection out of the
// application's pool.
func ExampleNew_pool() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	b := bus.New(pgnotify.ConnectFromPool(pool))
	defer b.Close(ctx)

	sub, err := b.Subscribe(ctx, []string{"jobs"})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	// The pool is free for the application's queries, NOTIFY among them.
	if err := pgnotify.Notify(ctx, pool, pgnotify.Message{Channel: "jobs", Payload: "job 7"}); err != nil {
		log.Fatal(err)
	}
	ev, err := sub.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ev.Kind, ev.Notifications[0].Payload)
	// Output:
	// Batch job 7
}
