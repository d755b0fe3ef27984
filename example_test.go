package pgnotify_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
)

// ExampleManager listens on two connections and handles every kind of event.
func ExampleManager() {
	ctx := context.Background()
	a, err := pgx.Connect(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	b, err := pgx.Connect(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	if err := pgnotify.Listen(ctx, a, "orders"); err != nil {
		log.Fatal(err)
	}
	if err := pgnotify.Listen(ctx, b, "Jobs"); err != nil {
		log.Fatal(err)
	}

	m := pgnotify.NewManager(pgnotify.WithTimeout(100 * time.Millisecond))
	defer m.Close(ctx)
	if err := m.Add(ctx, a, b); err != nil {
		log.Fatal(err)
	}
	// Members are the manager's now: send through Do.
	err = m.Do(ctx, a, func(c *pgx.Conn) error {
		return pgnotify.Notify(ctx, c,
			pgnotify.Message{Channel: "orders", Payload: "order 1"},
			pgnotify.Message{Channel: "Jobs", Payload: "job 1"})
	})
	if err != nil {
		log.Fatal(err)
	}

	got := 0
	for got < 2 {
		ev, err := m.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		switch ev.Kind {
		case pgnotify.Batch:
			for _, n := range ev.Notifications {
				fmt.Printf("%s: %s\n", n.Channel, n.Payload)
				got++
			}
		case pgnotify.Idle:
			// Nothing for 100ms: a good moment for housekeeping.
		case pgnotify.Dead:
			log.Printf("connection lost: %v", ev.Err)
		case pgnotify.Recovered:
			// Notifications sent while it was dead are lost: resynchronise.
		}
	}
	// Unordered output:
	// orders: order 1
	// Jobs: job 1
}

// ExampleManager_Drain collects, with no waiting, every notification
// committed before the call.
func ExampleManager_Drain() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	if err := pgnotify.Listen(ctx, conn, "cache_invalidate"); err != nil {
		log.Fatal(err)
	}
	m := pgnotify.NewManager()
	defer m.Close(ctx)
	if err := m.Add(ctx, conn); err != nil {
		log.Fatal(err)
	}

	sender, err := pgx.Connect(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer sender.Close(ctx)
	for _, key := range []string{"user:1", "user:2"} {
		msg := pgnotify.Message{Channel: "cache_invalidate", Payload: key}
		if err := pgnotify.Notify(ctx, sender, msg); err != nil {
			log.Fatal(err)
		}
	}

	events, err := m.Drain(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, ev := range events {
		for _, n := range ev.Notifications {
			fmt.Println("invalidate", n.Payload)
		}
	}
	// Output:
	// invalidate user:1
	// invalidate user:2
}

// ExampleWait reads one connection in the calling goroutine, with idle
// ticks; the loop body may use the connection.
func ExampleWait() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := pgnotify.Listen(ctx, conn, "tick"); err != nil {
		log.Fatal(err)
	}

	sent := 0
	for n, err := range pgnotify.Wait(ctx, conn, 50*time.Millisecond) {
		if err != nil {
			log.Fatal(err)
		}
		if n == nil {
			// Idle: the connection is ours between iterations.
			sent++
			msg := pgnotify.Message{Channel: "tick", Payload: fmt.Sprint("tick ", sent)}
			if err := pgnotify.Notify(ctx, conn, msg); err != nil {
				log.Fatal(err)
			}
			continue
		}
		fmt.Println(n.Payload)
		if sent == 2 {
			break
		}
	}
	// Output:
	// tick 1
	// tick 2
}

// ExampleNotify sends in the application's own transaction: the
// notifications are delivered at commit, or never.
func ExampleNotify() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)

	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// ... the application's writes ...
		return pgnotify.Notify(ctx, tx,
			pgnotify.Message{Channel: "orders", Payload: `{"id": 42}`},
			pgnotify.Message{Channel: "audit", Payload: "order 42 created"})
	})
	fmt.Println(err)

	err = pgnotify.Notify(ctx, conn, pgnotify.Message{Channel: "", Payload: "x"})
	fmt.Println(errors.Is(err, pgnotify.ErrInvalidChannel))
	// Output:
	// <nil>
	// true
}

// ExampleWithReconnect keeps a listener alive across server restarts: each
// dead connection is redialled with backoff, and the Recovered event marks
// the gap to resynchronise from the application's own tables.
func ExampleWithReconnect() {
	ctx := context.Background()
	dial := func(ctx context.Context, dead pgnotify.Garbage) (*pgx.Conn, error) {
		return pgx.Connect(ctx, exampleURL) // the manager LISTENs dead.Channels again
	}
	m := pgnotify.NewManager(pgnotify.WithReconnect(dial, 100*time.Millisecond, 10*time.Second))
	defer m.Close(ctx)

	conn, err := dial(ctx, pgnotify.Garbage{})
	if err != nil {
		log.Fatal(err)
	}
	if err := pgnotify.Listen(ctx, conn, "orders"); err != nil {
		log.Fatal(err)
	}
	if err := m.Add(ctx, conn); err != nil {
		log.Fatal(err)
	}
	for ev, err := range m.Events(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		switch ev.Kind {
		case pgnotify.Batch:
			// apply ev.Notifications
		case pgnotify.Dead:
			log.Printf("lost a connection: %v (reconnecting)", ev.Err)
		case pgnotify.Recovered:
			// Anything sent while it was down is lost: reload from the tables.
			log.Printf("listening again; resynchronising (%d failed attempts so far)",
				m.Stats().ReconnectFailures)
		}
	}
}

// ExampleEvent_replaced keeps a label per connection across reconnects:
// a Recovered event's Replaced is the dead connection that its Conn takes
// over from, so the label moves from one to the other.
func ExampleEvent_replaced() {
	ctx := context.Background()
	m := pgnotify.NewManager(pgnotify.WithReconnect(pgnotify.Redial, 10*time.Millisecond, time.Second))
	defer m.Close(ctx)

	labels := map[*pgx.Conn]string{}
	for _, name := range []string{"billing", "shipping"} {
		conn, err := pgx.Connect(ctx, exampleURL)
		if err != nil {
			log.Fatal(err)
		}
		if err := pgnotify.Listen(ctx, conn, name); err != nil {
			log.Fatal(err)
		}
		if err := m.Add(ctx, conn); err != nil {
			log.Fatal(err)
		}
		labels[conn] = name
	}

	// An outage of billing's connection, made by an administrator.
	admin, err := pgx.Connect(ctx, exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	defer admin.Close(ctx)
	for conn, name := range labels {
		if name == "billing" {
			_, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", conn.PgConn().PID())
			if err != nil {
				log.Fatal(err)
			}
		}
	}

	for ev, err := range m.Events(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		switch ev.Kind {
		case pgnotify.Batch:
			for _, n := range ev.Notifications {
				fmt.Printf("%s: %s\n", labels[ev.Conn], n.Payload)
			}
			return
		case pgnotify.Dead:
			fmt.Println(labels[ev.Conn], "lost")
		case pgnotify.Recovered:
			labels[ev.Conn] = labels[ev.Replaced]
			delete(labels, ev.Replaced)
			fmt.Println(labels[ev.Conn], "listening again")
			err := pgnotify.Notify(ctx, admin, pgnotify.Message{Channel: "billing", Payload: "invoice 7"})
			if err != nil {
				log.Fatal(err)
			}
		}
	}
	// Output:
	// billing lost
	// billing listening again
	// billing: invoice 7
}
