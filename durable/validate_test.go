package durable_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
)

// spy is an Execer that records what would have been sent.
type spy struct{ calls int }

func (s *spy) Exec(context.Context, string, ...any) (pgconn.CommandTag, error) {
	s.calls++
	return pgconn.CommandTag{}, nil
}

// unreachable would fail any dial: these checks must come first.
const unreachable = "postgres://nobody@127.0.0.1:1/none?connect_timeout=1"

// TestInvalidInputSendsNothing: invalid channel names, an oversized payload,
// oversized payloads together and bad slot names are rejected before anything is sent or dialled.
func TestInvalidInputSendsNothing(t *testing.T) {
	ctx := context.Background()
	for _, ch := range []string{"", strings.Repeat("x", 64), "a\x00b", "\xff"} {
		db := &spy{}
		err := durable.Emit(ctx, db, pgnotify.Message{Channel: "ok", Payload: "1"}, pgnotify.Message{Channel: ch})
		if !errors.Is(err, pgnotify.ErrInvalidChannel) || db.calls != 0 {
			t.Errorf("Emit on channel %q: %v after %d Exec calls; want ErrInvalidChannel and none", ch, err, db.calls)
		}
		if _, err := durable.Open(ctx, unreachable, "slot", []string{"ok", ch}); !errors.Is(err, pgnotify.ErrInvalidChannel) {
			t.Errorf("Open with channel %q: %v, want ErrInvalidChannel", ch, err)
		}
	}
	db := &spy{}
	big := strings.Repeat("x", durable.MaxPayloadLen+1)
	if err := durable.Emit(ctx, db, pgnotify.Message{Channel: "c", Payload: big}); !errors.Is(err, pgnotify.ErrPayloadTooLong) || db.calls != 0 {
		t.Errorf("Emit over MaxPayloadLen: %v after %d Exec calls; want ErrPayloadTooLong and none", err, db.calls)
	} else if strings.Contains(err.Error(), "xxxx") {
		t.Error("the error holds the payload")
	}
	// Each payload under MaxPayloadLen, together over MaxEmitLen. The
	// messages share one string: the check must not need the memory.
	part := big[:durable.MaxPayloadLen]
	many := make([]pgnotify.Message, durable.MaxEmitLen/durable.MaxPayloadLen+1)
	for i := range many {
		many[i] = pgnotify.Message{Channel: "c", Payload: part}
	}
	if err := durable.Emit(ctx, db, many...); !errors.Is(err, pgnotify.ErrPayloadTooLong) || db.calls != 0 {
		t.Errorf("Emit over MaxEmitLen in total: %v after %d Exec calls; want ErrPayloadTooLong and none", err, db.calls)
	}
	if err := durable.Emit(ctx, db); err != nil || db.calls != 0 {
		t.Errorf("Emit of nothing: %v after %d Exec calls", err, db.calls)
	}
	if _, err := durable.Open(ctx, unreachable, "slot", nil); err == nil {
		t.Error("Open with no channel succeeded")
	}
	for _, slot := range []string{"", "Upper", "has-dash", strings.Repeat("s", 64), "x'; DROP"} {
		if _, err := durable.Open(ctx, unreachable, slot, []string{"c"}); err == nil || !strings.Contains(err.Error(), "invalid slot name") {
			t.Errorf("Open on slot %q: %v, want an invalid slot name error", slot, err)
		}
		if err := durable.CreateSlot(ctx, unreachable, slot); err == nil || !strings.Contains(err.Error(), "invalid slot name") {
			t.Errorf("CreateSlot %q: %v, want an invalid slot name error", slot, err)
		}
	}
}
