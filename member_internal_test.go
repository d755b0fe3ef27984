package pgnotify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
)

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{
		Batch: "Batch", Idle: "Idle", Dead: "Dead", Recovered: "Recovered", Lagged: "Lagged",
		0: "Kind(0)", 9: "Kind(9)",
	} {
		assert.Equal(t, want, k.String())
	}
}

func TestFifoKeepsOrderAndReusesSpace(t *testing.T) {
	var q fifo
	ws := make([]*member, 100)
	for i := range ws {
		ws[i] = &member{seq: uint64(i)}
	}
	next := 0
	for round := range 50 {
		for i := range 3 {
			q.push(entry{w: ws[(round*3+i)%100]})
		}
		for range 2 {
			e, ok := q.pop()
			assert.True(t, ok)
			assert.Equal(t, uint64(next%100), e.w.seq)
			next++
		}
	}
	assert.Equal(t, 50, q.len())
	for q.len() > 0 {
		e, _ := q.pop()
		assert.Equal(t, uint64(next%100), e.w.seq)
		next++
	}
	_, ok := q.pop()
	assert.False(t, ok)

	// In a steady state (as many pops as pushes) the queue does not grow.
	q = fifo{}
	for i := range 10000 {
		q.push(entry{w: ws[i%100]})
		if i >= 4 {
			q.pop()
		}
	}
	assert.Equal(t, 4, q.len())
	assert.LessOrEqual(t, cap(q.items), 16, "popped space is reused")
}

func TestCauseClass(t *testing.T) {
	for want, err := range map[string]error{
		"57P01":   fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: "57P01"}),
		"health":  fmt.Errorf("%w: %w", errHealth, errors.New("timeout")),
		"closed":  errClosedInDo,
		"network": io.ErrUnexpectedEOF,
		"other":   errors.New("?"),
	} {
		assert.Equal(t, want, causeClass(err))
	}
}

// TestCauseClassByWhatHappened: one class per kind of failure, whoever met
// it. A cut in a simple-protocol query reaches the member as pgx's
// ErrConnClosed; a stall is a timeout whether a health ping or a drain pass
// met it.
func TestCauseClassByWhatHappened(t *testing.T) {
	stall := &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}
	for name, c := range map[string]struct {
		err  error
		want string
	}{
		"cut in a simple-protocol query": {fmt.Errorf("query: %w", pgconn.ErrConnClosed), "network"},
		"health ping met a reset":        {fmt.Errorf("%w: %w", errHealth, syscall.ECONNRESET), "network"},
		"health ping met a cut":          {fmt.Errorf("%w: %w", errHealth, pgconn.ErrConnClosed), "network"},
		"health ping timed out":          {fmt.Errorf("%w: %w", errHealth, context.DeadlineExceeded), "health"},
		"drain round trip timed out":     {fmt.Errorf("ping: %w", context.DeadlineExceeded), "health"},
		"server FATAL in a health ping":  {fmt.Errorf("%w: %w", errHealth, &pgconn.PgError{Code: "57P01"}), "57P01"},
		"socket error":                   {stall, "network"},
	} {
		assert.Equal(t, c.want, causeClass(c.err), name)
	}
}

func TestCutBatches(t *testing.T) {
	m := &Manager{cfg: newConfig([]Option{WithMaxPending(3), WithMaxPendingBytes(3 * (notificationOverhead + 10))})}
	small := &Notification{Channel: "c", Payload: "123456789"} // 10 bytes + overhead
	big := &Notification{Channel: "c", Payload: strings.Repeat("x", 500)}
	ns := []*Notification{small, small, small, small}
	k, kb := m.cut(ns, sizeOf(ns))
	assert.Equal(t, 3, k, "the count bound")
	assert.Equal(t, sizeOf(ns[:3]), kb)
	ns = []*Notification{small, big, small}
	k, kb = m.cut(ns, sizeOf(ns))
	assert.Equal(t, 1, k, "the byte bound stops before the big one")
	assert.Equal(t, sizeOf(ns[:1]), kb)
	k, _ = m.cut(ns[1:], sizeOf(ns[1:]))
	assert.Equal(t, 1, k, "one notification larger than the bound is a batch of its own")
}

func TestGoid(t *testing.T) {
	me := goid()
	assert.NotZero(t, me)
	assert.Equal(t, me, goid())
	other := make(chan uint64)
	go func() { other <- goid() }()
	assert.NotEqual(t, me, <-other)
}

func TestOptionsDefaultsAndZeroValues(t *testing.T) {
	c := newConfig(nil)
	assert.Equal(t, NoTimeout, c.timeout)
	assert.Equal(t, defaultHealthEvery, c.healthEvery)
	assert.Equal(t, defaultMaxPending, c.maxPending)
	c = newConfig([]Option{WithTimeout(-5), WithMaxPending(0), WithHealthCheck(0, 0), WithReconnect(nil, 0, 0), nil})
	assert.Equal(t, NoTimeout, c.timeout)
	assert.Equal(t, defaultMaxPending, c.maxPending)
	assert.Equal(t, time.Duration(0), c.healthEvery, "every <= 0 turns health checks off")
	assert.Equal(t, defaultHealthTimeout, c.healthTimeout)
	assert.Equal(t, 100*time.Millisecond, c.reconnectMin, "min <= 0 means 100ms")
	assert.Equal(t, 5*time.Second, c.reconnectMax, "max <= 0 means 5s")
	assert.Equal(t, roundTripTimeout, (&config{}).roundTripTimeout())
}
