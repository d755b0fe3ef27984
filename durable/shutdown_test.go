package durable_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// TestStalledConsumerFastShutdown: a consumer that holds a batch and asks
// for no other never holds up pg_ctl stop -m fast: neither with nothing else
// pending, nor with a backlog beyond the read-ahead (in bytes: 16 MiB; in
// batches: 4,096) that fills the socket and blocks the walsender. After the
// restart the stream delivers every batch, none twice.
func TestStalledConsumerFastShutdown(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	// A server of its own: a test that fails leaves it stuck in shutdown.
	c, err := pgtmp.Start(ctx, pgtmp.WithLogicalReplication(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	url := c.ConnString()
	mib := strings.Repeat("m", 1<<20)
	for _, tc := range []struct {
		name    string
		backlog func(t *testing.T, conn pgnotify.Execer) int // emits, returns the number of batches
		queued  uint64                                       // batches read ahead once the stream is stalled
	}{
		{"held", func(t *testing.T, db pgnotify.Execer) int {
			emit(t, db, "s", "0")
			emit(t, db, "s", "1")
			return 2
		}, 0},
		{"bytes", func(t *testing.T, db pgnotify.Execer) int {
			for i := range 40 {
				emit(t, db, "s", strconv.Itoa(i)+mib)
			}
			return 40
		}, 16},
		{"batches", func(t *testing.T, db pgnotify.Execer) int {
			// 4,200 transactions in one round trip, then bytes enough to
			// fill the socket behind them.
			if _, err := db.Exec(ctx, `DO $$ BEGIN FOR i IN 0..4199 LOOP
				PERFORM pg_logical_emit_message(true, 'pgnotify:s', i::text); COMMIT; END LOOP; END $$`); err != nil {
				t.Fatal(err)
			}
			for i := 4200; i < 4220; i++ {
				emit(t, db, "s", strconv.Itoa(i)+mib)
			}
			return 4220
		}, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			slot := newSlot(t, url)
			conn := connect(t, url)
			n := tc.backlog(t, conn)
			s := open(t, url, slot, []string{"s"}, durable.WithReconnect(50*time.Millisecond, time.Second))
			seen := map[string]bool{}
			ev := nextBatch(t, ctx, s) // held from here on
			seen[payloadKey(ev)] = true
			waitUntil(t, 60*time.Second, "the stream's read-ahead full", func() bool { return s.Stats().Batches >= 1+tc.queued })

			// pg_ctl waits for the shutdown to end; a walsender waiting
			// for the stalled consumer would make it time out.
			rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			if err := c.Restart(rctx, "fast"); err != nil {
				t.Fatalf("fast shutdown with a stalled consumer: %v", err)
			}
			emit(t, connect(t, url), "s", "end")
			var dead, recovered int
		read:
			for {
				ev := next(t, ctx, s)
				switch ev.Kind {
				case pgnotify.Dead:
					dead++
					t.Logf("Dead: %v", ev.Err)
				case pgnotify.Recovered:
					recovered++
				case pgnotify.Batch:
					k := payloadKey(ev)
					if k == "end" {
						break read
					}
					if seen[k] {
						t.Fatalf("batch %s delivered twice", k)
					}
					seen[k] = true
				}
			}
			if len(seen) != n {
				t.Errorf("%d batches delivered, want %d", len(seen), n)
			}
			if dead != 1 || recovered != 1 {
				t.Errorf("%d Dead and %d Recovered events, want 1 each", dead, recovered)
			}
		})
	}
}

// payloadKey names a batch by its payload's first digits.
func payloadKey(ev pgnotify.Event) string {
	return strings.TrimRight(ev.Notifications[0].Payload, "m")
}

// TestPublicationDropped: a publication dropped under a stream ends it,
// after Dead, with ErrPublicationMissing (what Open returns), instead of
// retrying for ever.
func TestPublicationDropped(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)
	s, err := durable.Open(ctx, connString, slot, []string{"pub"}, fast...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	t.Cleanup(func() {
		// Other tests' slots, created afterwards, need it.
		if _, err := connect(t, connString).Exec(context.Background(), "CREATE PUBLICATION "+durable.Publication); err != nil {
			t.Error(err)
		}
	})
	emit(t, conn, "pub", "1")
	nextBatch(t, ctx, s)
	if _, err := conn.Exec(ctx, "DROP PUBLICATION "+durable.Publication); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend($1)", readSlot(t, conn, slot).pid); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, ctx, s); ev.Kind != pgnotify.Dead {
		t.Fatalf("event %v, want Dead", ev.Kind)
	}
	if _, err := s.Next(ctx); !errors.Is(err, durable.ErrPublicationMissing) {
		t.Fatalf("Next: %v, want ErrPublicationMissing", err)
	}
	waitReleased(t, conn, slot)
	if _, err := durable.Open(ctx, connString, slot, []string{"pub"}); !errors.Is(err, durable.ErrPublicationMissing) {
		t.Fatalf("Open: %v, want ErrPublicationMissing", err)
	}
}
