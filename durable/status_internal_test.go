package durable

import (
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

// TestBackoff: waits double from min to max and are jittered down to half.
func TestBackoff(t *testing.T) {
	s := &Stream{cfg: defaultConfig()}
	WithReconnect(100*time.Millisecond, time.Second)(&s.cfg)
	r := &receiver{s: s}
	for _, want := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		want *= time.Millisecond
		for range 20 {
			if d := r.backoff(); d < want/2 || d > want {
				t.Fatalf("failure %d: wait %v, want within [%v, %v]", r.failures, d, want/2, want)
			}
		}
		r.failures++
	}
	r.failures = 1 << 20
	if d := r.backoff(); d < 500*time.Millisecond || d > time.Second {
		t.Fatalf("after many failures: %v", d)
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
