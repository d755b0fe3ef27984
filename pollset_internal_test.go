package pgnotify

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
)

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{
		Batch: "Batch", Idle: "Idle", Dead: "Dead", Recovered: "Recovered",
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

func TestBackoffStaysWithinBounds(t *testing.T) {
	min, max := 10*time.Millisecond, time.Second
	for n := range 80 {
		ceil := max
		if n < 7 {
			ceil = min << n
		}
		for range 50 {
			d := backoff(min, max, n)
			assert.GreaterOrEqual(t, d, min, "attempt %d", n)
			assert.LessOrEqual(t, d, ceil, "attempt %d", n)
		}
	}
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
	assert.Equal(t, roundTripTimeout, (&config{}).roundTripTimeout())
}
