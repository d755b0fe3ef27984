package bus

import "github.com/seed-c59d106d/pgnotify"

// This file holds a subscription's buffer. It is guarded by
// Subscription.mu.

// ring is a subscription's buffer: a power-of-two circular array grown on
// demand, so an idle subscription holds none. r and w are sequence numbers
// that only grow: the next notification to read and the next to write.
type ring struct {
	buf  []*pgnotify.Notification
	r, w uint64
}

func (q *ring) len() int { return int(q.w - q.r) }

// pushDropping appends ns, dropping the oldest to keep at most bound, and
// returns how many it dropped.
func (q *ring) pushDropping(ns []*pgnotify.Notification, bound int) (dropped int) {
	if excess := len(ns) - bound; excess > 0 {
		// Only the newest bound of ns can survive: the rest, and all
		// that is buffered, go.
		dropped = excess + q.len()
		q.r = q.w + uint64(excess)
		q.w = q.r
		ns = ns[excess:]
		q.clearAll()
	}
	if over := q.len() + len(ns) - bound; over > 0 {
		for i := range over {
			q.buf[(q.r+uint64(i))&uint64(len(q.buf)-1)] = nil
		}
		q.r += uint64(over)
		dropped += over
	}
	q.reserve(q.len()+len(ns), bound)
	mask := uint64(len(q.buf) - 1)
	for _, n := range ns {
		q.buf[q.w&mask] = n
		q.w++
	}
	return dropped
}

// reserve grows buf to hold n, doubling from 8, never past the power of two
// that holds bound.
func (q *ring) reserve(n, bound int) {
	if n <= len(q.buf) {
		return
	}
	size := max(8, len(q.buf))
	for size < n {
		size *= 2
	}
	size = min(size, ceilPow2(bound))
	nb := make([]*pgnotify.Notification, size)
	for i := q.r; i < q.w; i++ {
		nb[i&uint64(size-1)] = q.buf[i&uint64(len(q.buf)-1)]
	}
	q.buf = nb
}

// take removes the k oldest notifications and returns them in a new slice.
// An emptied buffer of more than a few slots is let go, so that a burst
// does not pin its peak size.
func (q *ring) take(k int) []*pgnotify.Notification {
	out := make([]*pgnotify.Notification, k)
	mask := uint64(len(q.buf) - 1)
	for i := range out {
		j := (q.r + uint64(i)) & mask
		out[i] = q.buf[j]
		q.buf[j] = nil
	}
	q.r += uint64(k)
	if q.r == q.w && len(q.buf) > 64 {
		q.buf = nil
	}
	return out
}

func (q *ring) clearAll() { clear(q.buf) }

// ceilPow2 returns the smallest power of two >= n; n is at most maxBuffer.
func ceilPow2(n int) int {
	p := 1
	for p < n && p < maxBuffer {
		p *= 2
	}
	return p
}
