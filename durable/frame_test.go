package durable_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
)

// TestEmitFramed: an Emit of 100 messages is one logical decoding message
// on the server; a stream decodes it into one batch of the stream's
// channels' messages, in order, duplicates kept. The same slot also holds
// messages in the format of one per message (an older producer, or another
// program writing the namespace by hand) and a single-message Emit: a stream
// reads them all, in commit order.
func TestEmitFramed(t *testing.T) {
	ctx := testContext(t)
	slot := newSlot(t, connString)
	conn := connect(t, connString)

	var msgs []pgnotify.Message
	var want []string
	for i := range 100 {
		ch := []string{"f1", "f2", "elsewhere"}[i%3]
		p := strconv.Itoa(i / 2) // each payload twice: duplicates are kept
		msgs = append(msgs, pgnotify.Message{Channel: ch, Payload: p})
		if ch != "elsewhere" {
			want = append(want, ch+"="+p)
		}
	}
	if err := durable.Emit(ctx, conn, msgs...); err != nil {
		t.Fatal(err)
	}
	// What the slot holds, counted before any stream reads it.
	var logical int
	err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', $2, 'messages', 'true') WHERE substr(data, 1, 1) = 'M'`,
		slot, durable.Publication).Scan(&logical)
	if err != nil {
		t.Fatal(err)
	}
	if logical != 1 {
		t.Errorf("Emit of 100 messages wrote %d logical decoding messages, want 1", logical)
	}

	// One per message, as before framing, in one transaction.
	if _, err := conn.Exec(ctx, `SELECT pg_logical_emit_message(true, 'pgnotify:f1', 'old1'),
		pg_logical_emit_message(true, 'pgnotify:f2', 'old2'), pg_logical_emit_message(true, 'pgnotify:f1', 'old1')`); err != nil {
		t.Fatal(err)
	}
	emit(t, conn, "f2", "single")

	s := open(t, connString, slot, []string{"f1", "f2"}, fast...)
	for _, w := range [][]string{want, {"f1=old1", "f2=old2", "f1=old1"}, {"f2=single"}} {
		ev := nextBatch(t, ctx, s)
		var got []string
		for _, n := range ev.Notifications {
			got = append(got, n.Channel+"="+n.Payload)
		}
		if fmt.Sprint(got) != fmt.Sprint(w) {
			t.Fatalf("batch %q, want %q", strings.Join(got, " "), strings.Join(w, " "))
		}
	}
}
