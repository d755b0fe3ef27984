package durable

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// TestEncodeStatus: the update carries a zero (invalid) flush position as
// is, which pglogrepl's SendStandbyStatusUpdate would replace.
func TestEncodeStatus(t *testing.T) {
	now := time.Date(2000, 1, 1, 0, 0, 1, 0, time.UTC)
	msg := encodeStatus(pglogrepl.LSN(0x1234), 0, now, true)
	if msg[0] != 'd' || binary.BigEndian.Uint32(msg[1:]) != 4+34 {
		t.Fatalf("not a CopyData of 34 bytes: % x", msg[:5])
	}
	data := msg[5:]
	if data[0] != 'r' ||
		binary.BigEndian.Uint64(data[1:]) != 0x1234 ||
		binary.BigEndian.Uint64(data[9:]) != 0 ||
		binary.BigEndian.Uint64(data[17:]) != 0 ||
		binary.BigEndian.Uint64(data[25:]) != 1e6 ||
		data[33] != 1 {
		t.Fatalf("status update % x", data)
	}
}

// TestBackoff: the receiver's waits are pgnotify's one backoff, between
// the option's bounds, the ceiling doubling per failed attempt; the
// defaults are the Manager's and the Bus's.
func TestBackoff(t *testing.T) {
	s := &Stream{cfg: defaultConfig()}
	if s.cfg.backoffMin != 100*time.Millisecond || s.cfg.backoffMax != 5*time.Second {
		t.Fatalf("defaults %v to %v, want 100ms to 5s", s.cfg.backoffMin, s.cfg.backoffMax)
	}
	WithReconnect(100*time.Millisecond, time.Second)(&s.cfg)
	r := newReceiver(context.Background(), s, serverState{})
	for n, ceil := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		ceil *= time.Millisecond
		if d := r.bo.Next(); d < 100*time.Millisecond || d > ceil {
			t.Fatalf("attempt %d: wait %v, want within [100ms, %v]", n, d, ceil)
		}
	}
	WithReconnect(0, 0)(&s.cfg)
	if s.cfg.backoffMin != 100*time.Millisecond || s.cfg.backoffMax != 5*time.Second {
		t.Fatalf("WithReconnect(0, 0): %v to %v, want the defaults", s.cfg.backoffMin, s.cfg.backoffMax)
	}
}

// TestStatusInterval: the interval is shortened to a third of the server's
// wal_sender_timeout.
func TestStatusInterval(t *testing.T) {
	s := &Stream{cfg: defaultConfig()}
	r := &receiver{s: s}
	r.setTimers(serverState{walSenderTimeout: 2 * time.Second})
	if r.interval != 2*time.Second/3 {
		t.Errorf("interval %v with a 2 s timeout", r.interval)
	}
	r.setTimers(serverState{})
	if r.interval != 10*time.Second || r.silence != 30*time.Second {
		t.Errorf("interval %v, silence %v with no timeout", r.interval, r.silence)
	}
}
