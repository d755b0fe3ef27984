package natsbridge_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/seed-c59d106d/pgnotify/durable"
	"github.com/seed-c59d106d/pgnotify/internal/natstmp"
)

// startNATS starts an embedded NATS server with JetStream storing in a test
// directory; it stops when t ends. Every test that uses it also needs
// PostgreSQL, so under -short (the server-free subset) it skips t.
func startNATS(t testing.TB) *natstmp.Server {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a PostgreSQL server; run without -short")
	}
	s, err := natstmp.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// connectNATS connects to s, reconnecting for ever; closed when t ends.
func connectNATS(t testing.TB, s *natstmp.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// connect opens a PostgreSQL connection, closed when t ends.
func connect(t testing.TB, ctx context.Context) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

var slotSeq atomic.Int64

// newSlot creates a durable slot for this test, dropped when t ends.
func newSlot(t testing.TB, ctx context.Context) string {
	t.Helper()
	slot := fmt.Sprintf("nb_%s_%d", strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name())), slotSeq.Add(1))
	if len(slot) > 60 {
		slot = fmt.Sprintf("nb_%d", slotSeq.Add(1))
	}
	if err := durable.CreateSlot(ctx, connString, slot); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// The slot may still be released by a killed process's walsender.
		for {
			err := durable.DropSlot(ctx, connString, slot)
			if err == nil || ctx.Err() != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return slot
}

// newJetStream makes a file-storage JetStream stream capturing subjects,
// with a duplicate window of a minute.
func newJetStream(t testing.TB, ctx context.Context, nc *nats.Conn, name string, subjects ...string) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: subjects, Storage: jetstream.FileStorage, Duplicates: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	return js, st
}

// waitFor polls cond until it holds, failing t when ctx ends first.
func waitFor(t testing.TB, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// streamMsgs returns how many messages st holds.
func streamMsgs(t testing.TB, ctx context.Context, st jetstream.Stream) uint64 {
	t.Helper()
	info, err := st.Info(ctx)
	if err != nil {
		return 0 // NATS may be restarting
	}
	return info.State.Msgs
}

// readAll returns every message of st, in stream order.
func readAll(t testing.TB, ctx context.Context, st jetstream.Stream) []*jetstream.RawStreamMsg {
	t.Helper()
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// checkOnce fails t unless msgs holds each of the want payloads exactly
// once, in order, with a unique Nats-Msg-Id each.
func checkOnce(t testing.TB, msgs []*jetstream.RawStreamMsg, want []string) {
	t.Helper()
	ids := make(map[string]bool)
	var got []string
	for _, m := range msgs {
		id := m.Header.Get(jetstream.MsgIDHeader)
		if ids[id] {
			t.Errorf("message ID %q twice in the stream", id)
		}
		ids[id] = true
		got = append(got, string(m.Data))
	}
	if len(got) != len(want) {
		t.Fatalf("the stream holds %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d is %q, want %q (order or content)", i, got[i], want[i])
		}
	}
}
