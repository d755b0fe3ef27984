package pgnotify

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

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
