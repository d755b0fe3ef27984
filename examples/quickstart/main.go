// Command quickstart shows pgnotify's manager at work: batches from two
// connections, an idle tick, a drain pass, and a killed backend landing in
// the garbage set.
//
//	go run ./examples/quickstart
//
// It uses $DATABASE_URL when set; otherwise it starts a throwaway
// PostgreSQL server from the installed binaries and removes it at the end.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		fmt.Println("DATABASE_URL is not set: starting a throwaway PostgreSQL server")
		c, err := pgtmp.Start(ctx)
		if err != nil {
			return err
		}
		defer c.Stop()
		url = c.ConnString()
	}

	// Two listening connections, each on its own channel.
	orders, err := listen(ctx, url, "orders")
	if err != nil {
		return err
	}
	jobs, err := listen(ctx, url, "Jobs") // names are quoted: "Jobs" is not "jobs"
	if err != nil {
		return err
	}
	sender, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer sender.Close(ctx)

	m := pgnotify.NewManager(pgnotify.WithTimeout(200 * time.Millisecond))
	defer m.Close(ctx)
	if err := m.Add(ctx, orders, jobs); err != nil {
		return err
	}
	name := map[*pgx.Conn]string{orders: "orders conn", jobs: "jobs conn"}

	fmt.Println("\n1. Batches from two connections")
	err = pgnotify.Notify(ctx, sender,
		pgnotify.Message{Channel: "orders", Payload: "order 1"},
		pgnotify.Message{Channel: "orders", Payload: "order 2"},
		pgnotify.Message{Channel: "Jobs", Payload: "job 1"})
	if err != nil {
		return err
	}
	for got := 0; got < 3; {
		ev, err := m.Next(ctx)
		if err != nil {
			return err
		}
		if ev.Kind == pgnotify.Batch {
			for _, n := range ev.Notifications {
				fmt.Printf("   %-11s %s: %s\n", name[ev.Conn], n.Channel, n.Payload)
			}
			got += len(ev.Notifications)
		}
	}

	fmt.Println("\n2. An idle tick when nothing arrives within the timeout")
	ev, err := m.Next(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("   %v\n", ev.Kind)

	fmt.Println("\n3. A drain pass: everything committed before it, no waiting")
	for i := 1; i <= 3; i++ {
		msg := pgnotify.Message{Channel: "Jobs", Payload: fmt.Sprint("job ", i+1)}
		if err := pgnotify.Notify(ctx, sender, msg); err != nil {
			return err
		}
	}
	evs, err := m.Drain(ctx)
	if err != nil {
		return err
	}
	for _, ev := range evs {
		fmt.Printf("   %v from %s: %d notifications\n", ev.Kind, name[ev.Conn], len(ev.Notifications))
	}

	fmt.Println("\n4. A killed backend lands in the garbage set; the other carries on")
	_, err = sender.Exec(ctx, "SELECT pg_terminate_backend($1)", orders.PgConn().PID())
	if err != nil {
		return err
	}
	m.SetTimeout(pgnotify.NoTimeout)
	for {
		ev, err := m.Next(ctx)
		if err != nil {
			return err
		}
		if ev.Kind == pgnotify.Dead {
			fmt.Printf("   Dead: %s: %v\n", name[ev.Conn], ev.Err)
			break
		}
	}
	for _, g := range m.Garbage() {
		fmt.Printf("   garbage: pid %d, channels %v\n", g.Conn.PgConn().PID(), g.Channels)
	}
	fmt.Printf("   still live: %d connection(s)\n", len(m.Conns()))
	return nil
}

// listen connects and listens on channel.
func listen(ctx context.Context, url, channel string) (*pgx.Conn, error) {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	if err := pgnotify.Listen(ctx, c, channel); err != nil {
		c.Close(ctx)
		return nil, err
	}
	return c, nil
}
