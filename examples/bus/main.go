// Command bus shows pgnotify's Bus at work: three subscriptions on
// overlapping channels over one connection, a slow one that lags and is
// told exactly how much it lost, and a terminated backend that every
// subscription sees as Dead then Recovered.
//
//	go run ./examples/bus
//
// It uses $DATABASE_URL when set; otherwise it starts a throwaway
// PostgreSQL server from the installed binaries and removes it at the end.
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/bus"
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

	// The Bus dials its own connection; remember its backend, to kill it.
	var busPID atomic.Uint32
	b := bus.New(func(ctx context.Context) (*pgx.Conn, error) {
		c, err := pgx.Connect(ctx, url)
		if err == nil {
			busPID.Store(c.PgConn().PID())
		}
		return c, err
	}, bus.WithReconnect(10*time.Millisecond, time.Second))
	defer b.Close(ctx)

	// orders must see every order: lossless. The Bus hands each batch to
	// every OverflowDropOldest subscription before it waits for an
	// OverflowBlock one, so once orders has read an order, audit has been
	// given it too.
	orders, err := b.Subscribe(ctx, []string{"orders"}, bus.WithOverflow(bus.OverflowBlock))
	if err != nil {
		return err
	}
	jobs, err := b.Subscribe(ctx, []string{"jobs"})
	if err != nil {
		return err
	}
	// A slow reader with a small buffer: it will lag.
	audit, err := b.Subscribe(ctx, []string{"orders", "jobs"}, bus.WithBuffer(4))
	if err != nil {
		return err
	}
	subs := []struct {
		name string
		s    *bus.Subscription
	}{{"orders", orders}, {"jobs", jobs}, {"audit", audit}}

	sender, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer sender.Close(ctx)

	fmt.Println("\n1. One connection, three subscriptions on overlapping channels")
	err = pgnotify.Notify(ctx, sender,
		pgnotify.Message{Channel: "orders", Payload: "order 1"},
		pgnotify.Message{Channel: "jobs", Payload: "job 1"})
	if err != nil {
		return err
	}
	for _, x := range subs {
		if err := show(ctx, x.name, x.s, len(x.s.Channels())); err != nil {
			return err
		}
	}

	fmt.Println("\n2. audit does not read while 20 orders arrive; its buffer holds 4")
	var msgs []pgnotify.Message
	for i := range 20 {
		msgs = append(msgs, pgnotify.Message{Channel: "orders", Payload: fmt.Sprint("order ", i+2)})
	}
	if err := pgnotify.Notify(ctx, sender, msgs...); err != nil {
		return err
	}
	// When orders has all 20, audit has been given them too (see above).
	if err := show(ctx, "orders", orders, 20); err != nil {
		return err
	}
	if err := show(ctx, "audit", audit, 4); err != nil {
		return err
	}

	fmt.Println("\n3. The Bus's backend is terminated")
	if _, err := sender.Exec(ctx, "select pg_terminate_backend($1)", busPID.Load()); err != nil {
		return err
	}
	for _, x := range subs {
		for done := false; !done; {
			ev, err := x.s.Next(ctx)
			if err != nil {
				return err
			}
			switch ev.Kind {
			case pgnotify.Dead:
				fmt.Printf("  %-6s Dead: %v\n", x.name, ev.Err)
			case pgnotify.Recovered:
				fmt.Printf("  %-6s Recovered: resynchronise from the tables\n", x.name)
				done = true
			}
		}
	}
	if err := pgnotify.Notify(ctx, sender, pgnotify.Message{Channel: "orders", Payload: "after the recovery"}); err != nil {
		return err
	}
	if err := show(ctx, "orders", orders, 1); err != nil {
		return err
	}
	if err := show(ctx, "audit", audit, 1); err != nil {
		return err
	}
	st := b.Stats()
	fmt.Printf("\nStats: connected %v (backend %d), %d subscriptions, %d channels, %d received, %d delivered, %d dropped, %d deaths, %d reconnects\n",
		st.Connected, st.PID, st.Subscriptions, st.Channels, st.Received, st.Delivered, st.Dropped, st.Deaths, st.Reconnects)

	if err := b.Close(ctx); err != nil {
		return err
	}
	if _, err := orders.Next(ctx); errors.Is(err, pgnotify.ErrClosed) {
		fmt.Println("After Bus.Close, Next returns ErrClosed")
	}
	return nil
}

// show prints the events of s until want notifications have come.
func show(ctx context.Context, name string, s *bus.Subscription, want int) error {
	for got := 0; got < want; {
		ev, err := s.Next(ctx)
		if err != nil {
			return err
		}
		switch ev.Kind {
		case pgnotify.Batch:
			for _, n := range ev.Notifications {
				fmt.Printf("  %-6s %s: %s\n", name, n.Channel, n.Payload)
			}
			got += len(ev.Notifications)
		case pgnotify.Lagged:
			fmt.Printf("  %-6s Lagged: %d dropped, the oldest\n", name, ev.Dropped)
		case pgnotify.Dead, pgnotify.Recovered:
			fmt.Printf("  %-6s %v\n", name, ev.Kind)
		}
	}
	return nil
}
