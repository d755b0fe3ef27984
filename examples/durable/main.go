// Command durable shows package durable's at-least-once delivery: messages
// emitted while the consumer is stopped arrive when it starts; a consumer
// killed mid-batch (SIGKILL, no goodbye) gets that batch again after its
// restart, and the program marks the duplicates by their LSN.
//
//	go run ./examples/durable
//
// It uses $DATABASE_URL when set (the server needs wal_level = logical and
// the role REPLICATION); otherwise it starts a throwaway PostgreSQL server with
// wal_level = logical from the installed binaries and removes it at the end.
// The consumer is this program again, started with -consume.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

const (
	slot    = "example_orders"
	channel = "orders"
)

var (
	consume = flag.String("consume", "", "run as the consumer of this connection string")
	hold    = flag.Int("hold", 0, "consumer: stop acknowledging at this batch (wait to be killed)")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	if *consume != "" {
		err = consumer(ctx, *consume, *hold)
	} else {
		err = run(ctx)
	}
	if err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	if pgtmp.EnvURL() == "" {
		fmt.Println("DATABASE_URL is not set: starting a throwaway PostgreSQL server with wal_level = logical")
	}
	url, stop, err := pgtmp.FromEnv(ctx, pgtmp.WithLogicalReplication(0))
	if err != nil {
		return err
	}
	defer stop()
	if err := durable.CreateSlot(ctx, url, slot); err != nil {
		return err
	}
	defer func() {
		if err := durable.DropSlot(context.WithoutCancel(ctx), url, slot); err != nil {
			log.Printf("drop the slot yourself (SELECT pg_drop_replication_slot('%s')): %v", slot, err)
		}
	}()
	producer, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer producer.Close(ctx)

	fmt.Println("\n1. The consumer is stopped; five orders are emitted, one transaction each.")
	for i := 1; i <= 5; i++ {
		if err := emitOrder(ctx, producer, i); err != nil {
			return err
		}
	}

	fmt.Println("\n2. The consumer starts, receives them, and is killed (SIGKILL) while it handles the third.")
	seen := map[string]bool{}
	if err := runConsumer(ctx, url, 3, seen); err != nil {
		return err
	}

	fmt.Println("\n3. Two more orders while the consumer is down.")
	for i := 6; i <= 7; i++ {
		if err := emitOrder(ctx, producer, i); err != nil {
			return err
		}
	}

	fmt.Println("\n4. The consumer restarts: the batch it died on comes again, then the rest.")
	return runConsumer(ctx, url, 0, seen)
}

func emitOrder(ctx context.Context, db pgnotify.Execer, i int) error {
	fmt.Printf("   emit order %d\n", i)
	return durable.Emit(ctx, db, pgnotify.Message{Channel: channel, Payload: "order " + strconv.Itoa(i)})
}

// runConsumer starts the consumer process and prints its batches, marking
// those seen before. With hold > 0 it kills the consumer once that batch has
// arrived; otherwise it stops it after the last order.
func runConsumer(ctx context.Context, url string, hold int, seen map[string]bool) error {
	cmd := exec.CommandContext(ctx, os.Args[0], "-consume", url, "-hold", strconv.Itoa(hold))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	sc := bufio.NewScanner(out)
	var prev string
	for sc.Scan() {
		lsn, payload, _ := strings.Cut(sc.Text(), " ")
		mark := ""
		if seen[lsn] {
			mark = "   <- duplicate (same LSN as before)"
		}
		seen[lsn] = true
		fmt.Printf("   consumer got %s (LSN %s)%s\n", payload, lsn, mark)
		if hold > 0 && payload == "order "+strconv.Itoa(hold) {
			// Asking for this batch acknowledged the one before; the stream
			// tells the server within about 20 ms. Wait for that before
			// the crash, so that the output is the same on every run: only
			// this batch comes again.
			if err := waitConfirmed(ctx, url, prev); err != nil {
				return err
			}
			fmt.Println("   ... killing the consumer while it handles this batch")
			return nil
		}
		prev = lsn
	}
	// Without hold, the consumer ends by itself after the last order.
	if hold == 0 {
		return cmd.Wait()
	}
	return fmt.Errorf("consumer exited early: %v", sc.Err())
}

// waitConfirmed waits until the slot's confirmed position passes lsn.
func waitConfirmed(ctx context.Context, url, lsn string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for {
		var done bool
		err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn - '0/0'::pg_lsn > $1::numeric
			FROM pg_replication_slots WHERE slot_name = $2`, lsn, slot).Scan(&done)
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// consumer is the consumer process: it prints "LSN payload" per message.
// When it reaches batch hold, it stops there without asking for the next
// batch, so that batch is never acknowledged.
func consumer(ctx context.Context, url string, hold int) error {
	s, err := durable.Open(ctx, url, slot, []string{channel}) // the defaults: nothing tuned
	if err != nil {
		return err
	}
	defer s.Close(ctx)
	n := 0
	for ev, err := range s.Events(ctx) {
		if err != nil {
			return err
		}
		switch ev.Kind {
		case pgnotify.Batch:
			n++
			for _, m := range ev.Notifications {
				fmt.Println(ev.LSN, m.Payload)
				if m.Payload == "order 7" {
					return nil // the deferred Close acknowledges it
				}
			}
			if n == hold {
				select {} // "handling" it until killed
			}
		case pgnotify.Dead, pgnotify.Recovered:
			log.Printf("consumer: %v %v", ev.Kind, ev.Err)
		}
	}
	return nil
}
