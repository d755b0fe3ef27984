// Command quickstart shows pgnotify's manager at work: batches from two
// connections, an idle tick, the manager's connection lent out with Do
// between events, a channel added with m.Listen, a drain pass, and a killed
// backend that comes back by itself (WithReconnect) with a Recovered event.
//
//	go run ./examples/quickstart
//
// It uses $DATABASE_URL when set (PGNOTIFY_TEST_DATABASE_URL wins, as in
// the tests); otherwise it starts a throwaway PostgreSQL server from the
// installed binaries and removes it at the end.
package main

import (
	"context"
	"fmt"
	"log"
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
	if pgtmp.EnvURL() == "" {
		fmt.Println("DATABASE_URL is not set: starting a throwaway PostgreSQL server")
	}
	url, stop, err := pgtmp.FromEnv(ctx)
	if err != nil {
		return err
	}
	defer stop()

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

	// WithReconnect replaces a dead connection by itself: dial a new one,
	// and the manager LISTENs on the dead one's channels again.
	dial := func(ctx context.Context, dead pgnotify.Garbage) (*pgx.Conn, error) {
		return pgx.Connect(ctx, url)
	}
	m := pgnotify.NewManager(
		pgnotify.WithTimeout(200*time.Millisecond),
		pgnotify.WithReconnect(dial, 100*time.Millisecond, 5*time.Second))
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
	if err := printBatches(ctx, m, name, 3); err != nil {
		return err
	}

	fmt.Println("\n2. An idle tick when nothing arrives within the timeout")
	ev, err := m.Next(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("   %v\n", ev.Kind)

	fmt.Println("\n3. Between events: lend a member out with Do, add a channel with m.Listen")
	// The manager owns its connections: use one only through Do.
	err = m.Do(ctx, jobs, func(c *pgx.Conn) error {
		var pid uint32
		if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			return err
		}
		fmt.Printf("   Do: jobs conn is backend %d\n", pid)
		return nil
	})
	if err != nil {
		return err
	}
	// m.Listen, not pgnotify.Listen inside Do: the manager remembers the
	// channel and listens on it again after a reconnect.
	if err := m.Listen(ctx, orders, "refunds"); err != nil {
		return err
	}
	if err := pgnotify.Notify(ctx, sender, pgnotify.Message{Channel: "refunds", Payload: "refund 1"}); err != nil {
		return err
	}
	if err := printBatches(ctx, m, name, 1); err != nil {
		return err
	}

	fmt.Println("\n4. A drain pass: everything committed before it, no waiting")
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

	fmt.Println("\n5. A killed backend: Dead, then Recovered (WithReconnect), then deliveries again")
	_, err = sender.Exec(ctx, "SELECT pg_terminate_backend($1)", orders.PgConn().PID())
	if err != nil {
		return err
	}
	m.SetTimeout(pgnotify.NoTimeout)
	for recovered := false; !recovered; {
		ev, err := m.Next(ctx)
		if err != nil {
			return err
		}
		switch ev.Kind {
		case pgnotify.Dead:
			fmt.Printf("   Dead: %s: %v\n", name[ev.Conn], ev.Err)
		case pgnotify.Recovered:
			// Notifications sent while it was dead are lost: this is
			// where an application reloads what it caches.
			name[ev.Conn] = name[ev.Replaced] + " (new)"
			fmt.Printf("   Recovered: %s is backend %d; reload what you cache\n", name[ev.Conn], ev.Conn.PgConn().PID())
			recovered = true
		}
	}
	err = pgnotify.Notify(ctx, sender,
		pgnotify.Message{Channel: "orders", Payload: "order 3"},
		pgnotify.Message{Channel: "refunds", Payload: "refund 2"})
	if err != nil {
		return err
	}
	if err := printBatches(ctx, m, name, 2); err != nil {
		return err
	}
	fmt.Printf("   live: %d connection(s); recoveries: %d\n", len(m.Conns()), m.Stats().Recoveries)
	return nil
}

// printBatches prints batches until want notifications have come.
func printBatches(ctx context.Context, m *pgnotify.Manager, name map[*pgx.Conn]string, want int) error {
	for got := 0; got < want; {
		ev, err := m.Next(ctx)
		if err != nil {
			return err
		}
		if ev.Kind == pgnotify.Batch {
			for _, n := range ev.Notifications {
				fmt.Printf("   %-17s %s: %s\n", name[ev.Conn], n.Channel, n.Payload)
			}
			got += len(ev.Notifications)
		}
	}
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
