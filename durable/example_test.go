package durable_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
)

// A consumer: create the slot once, then read batches. Asking for the next
// batch acknowledges the previous one, so a crash mid-batch means that batch
// comes again: handle it idempotently, keyed by its LSN.
func ExampleOpen() {
	ctx := context.Background()
	url := os.Getenv("DATABASE_URL")
	if err := durable.CreateSlot(ctx, url, "invoices_mailer"); err != nil {
		log.Fatal(err)
	}
	s, err := durable.Open(ctx, url, "invoices_mailer", []string{"invoices"})
	if err != nil {
		log.Fatal(err) // ErrSlotInUse: another consumer runs; ErrWalLevel: server setting
	}
	defer s.Close(ctx)
	for ev, err := range s.Events(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		switch ev.Kind {
		case pgnotify.Batch:
			for _, n := range ev.Notifications {
				fmt.Printf("transaction %d: %s %s\n", ev.LSN, n.Channel, n.Payload)
			}
		case pgnotify.Dead:
			log.Printf("connection lost (%v); reconnecting, nothing is lost", ev.Err)
		case pgnotify.Recovered:
			log.Print("replicating again")
		}
	}
}

// A producer: the message commits or rolls back with the transaction that
// wrote the invoice.
func ExampleEmit() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var id string
		if err := tx.QueryRow(ctx, "INSERT INTO invoices DEFAULT VALUES RETURNING id::text").Scan(&id); err != nil {
			return err
		}
		return durable.Emit(ctx, tx, pgnotify.Message{Channel: "invoices", Payload: id})
	})
	if err != nil {
		log.Fatal(err)
	}
}

// Monitoring: how much WAL the slot keeps on the server's disk.
func ExampleRetainedWAL() {
	n, err := durable.RetainedWAL(context.Background(), os.Getenv("DATABASE_URL"), "invoices_mailer")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("slot invoices_mailer holds %d MiB of WAL\n", n>>20)
}
