package pgnotify

import (
	"context"
	"iter"
	"slices"
	"sync"
)

// A Subscription receives the notifications of its channels from a [Bus],
// through [Subscription.Next] or [Subscription.Events]. Read it from one
// goroutine at a time; different subscriptions are independent. Close is
// safe from any goroutine.
type Subscription struct {
	bus      *Bus
	channels []string // deduplicated, in the caller's order; read-only
	bound    int
	overflow Overflow
	done     chan struct{} // closed by shut
	wake     chan struct{} // cap 1: something for a waiting reader
	space    chan struct{} // cap 1: room for a dispatcher blocked on a full buffer

	// Guarded by Bus.mu.
	pos     []int // pos[i]: index of this subscription in its channel i's entry
	active  bool  // Subscribe returned it: it gets Dead events
	removed bool  // out of the index (closed, or its Subscribe failed)

	// stage collects a batch's notifications for this subscription; owned
	// by the dispatcher goroutine.
	stage []*Notification

	mu      sync.Mutex
	q       ring
	seen    uint64      // sequence number up to which the reader was told: yielded or reported lost
	ctrl    []ctrlEvent // Dead and Recovered, in order, each placed after the notifications before it
	waiting bool        // the reader is blocked in Next
	blocked bool        // the dispatcher is blocked on a full buffer (OverflowBlock)
	closed  bool
}

// ctrlEvent is a Dead or Recovered event placed in a subscription's stream:
// it is yielded once every notification numbered below at was yielded or
// reported lost.
type ctrlEvent struct {
	at uint64
	ev Event
}

func newSubscription(b *Bus, channels []string, cfg subscribeConfig) *Subscription {
	return &Subscription{
		bus:      b,
		channels: channels,
		bound:    cfg.buffer,
		overflow: cfg.overflow,
		done:     make(chan struct{}),
		wake:     make(chan struct{}, 1),
		space:    make(chan struct{}, 1),
		pos:      make([]int, len(channels)),
	}
}

// Channels returns the subscription's channels, in the order given to
// [Bus.Subscribe], without repeats. The slice is the caller's.
func (s *Subscription) Channels() []string { return slices.Clone(s.channels) }

// Next returns the subscription's next event: a [Batch] of notifications of
// its channels, in server order; [Lagged] when its buffer overflowed under
// [OverflowDropOldest] (Dropped says how many were lost, just before the
// next Batch); [Dead] when the Bus's connection died (what is committed
// from then until Recovered is lost); [Recovered] when a new connection
// listens on the channels again, the moment to resynchronise from the
// application's own tables. Conn and Replaced are nil in every event.
//
// A Batch's slice is the caller's, but its *Notification values may be
// shared with other subscriptions: treat them as read-only.
//
// Next blocks until an event, ctx ends (it returns ctx's error) or the
// subscription or its Bus is closed (it returns [ErrClosed], also on every
// later call). Call it from one goroutine at a time.
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return Event{}, ErrClosed
		}
		if ev, ok := s.popLocked(); ok {
			s.mu.Unlock()
			return ev, nil
		}
		s.waiting = true
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-s.done:
		case <-ctx.Done():
			s.mu.Lock()
			s.waiting = false
			s.mu.Unlock()
			return Event{}, ctx.Err()
		}
	}
}

// Events ranges over [Subscription.Next]: a single-use stream for one
// goroutine. An error (ctx's, or [ErrClosed] once the subscription or the
// Bus is closed) is yielded once, last.
func (s *Subscription) Events(ctx context.Context) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		for {
			ev, err := s.Next(ctx)
			if err != nil {
				yield(Event{}, err)
				return
			}
			if !yield(ev, nil) {
				return
			}
		}
	}
}

// popLocked takes the next event, if any. Losses are reported where they
// happened: the notifications dropped before a Dead or Recovered event are
// counted in a Lagged event before it, those after in one after it. Must
// be called with s.mu held.
func (s *Subscription) popLocked() (Event, bool) {
	if len(s.ctrl) > 0 && s.ctrl[0].at <= s.q.r {
		c := s.ctrl[0]
		if s.seen < c.at {
			lost := c.at - s.seen
			s.seen = c.at
			return Event{Kind: Lagged, Dropped: int(lost)}, true
		}
		s.ctrl[0] = ctrlEvent{}
		s.ctrl = s.ctrl[1:]
		if len(s.ctrl) == 0 {
			s.ctrl = nil
		}
		return c.ev, true
	}
	if s.q.r > s.seen {
		lost := s.q.r - s.seen
		s.seen = s.q.r
		return Event{Kind: Lagged, Dropped: int(lost)}, true
	}
	end := s.q.w
	if len(s.ctrl) > 0 {
		end = s.ctrl[0].at
	}
	if end == s.q.r {
		return Event{}, false
	}
	ns := s.q.take(int(end - s.q.r))
	s.seen = s.q.r
	if s.blocked {
		s.blocked = false
		signal(s.space)
	}
	return Event{Kind: Batch, Notifications: ns}, true
}

// deliver appends ns to the buffer under the subscription's policy, and
// wakes the reader. Under OverflowBlock it waits for room or for the
// subscription to close. It returns how many notifications were dropped.
// Called by the dispatcher only.
func (s *Subscription) deliver(ns []*Notification) (dropped int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(ns) > 0 {
		if s.closed {
			return dropped
		}
		if s.overflow == OverflowDropOldest {
			dropped += s.q.pushDropping(ns, s.bound)
			ns = nil
		} else {
			room := s.bound - s.q.len()
			if room == 0 {
				s.blocked = true
				s.wakeReaderLocked()
				s.mu.Unlock()
				select {
				case <-s.space:
				case <-s.done:
				}
				s.mu.Lock()
				continue
			}
			k := min(room, len(ns))
			s.q.pushDropping(ns[:k], s.bound)
			ns = ns[k:]
		}
	}
	s.wakeReaderLocked()
	return dropped
}

// pushEvent places a Dead or Recovered event after everything delivered so
// far. It is never dropped and does not count against the bound.
func (s *Subscription) pushEvent(ev Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.ctrl = append(s.ctrl, ctrlEvent{at: s.q.w, ev: ev})
	s.wakeReaderLocked()
}

// wakeReaderLocked wakes a reader blocked in Next. Must be called with s.mu
// held.
func (s *Subscription) wakeReaderLocked() {
	if s.waiting {
		s.waiting = false
		signal(s.wake)
	}
}

// shut marks the subscription closed and releases its reader and a
// dispatcher blocked on it; the buffer is let go.
func (s *Subscription) shut() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.q = ring{}
	s.ctrl = nil
	close(s.done)
}

// Close ends the subscription: a blocked [Subscription.Next] returns
// [ErrClosed], as does every later call. If it was the last subscription of
// a channel, Close returns once the Bus's connection has UNLISTENed it (one
// round trip, waited for at most the health-check timeout; see
// [WithBusHealthCheck]), so that the connection's pg_listening_channels() is
// the union of the live subscriptions' channels. Close is safe from any
// goroutine, also while Next is blocked, and returns nil, also when called
// again.
func (s *Subscription) Close() error {
	b := s.bus
	b.mu.Lock()
	if s.removed {
		b.mu.Unlock()
		s.shut() // Bus.Close may be shutting it at this moment
		return nil
	}
	last := b.removeLocked(s)
	b.mu.Unlock()
	s.shut()
	if last {
		b.kickSync()
		b.awaitUnlistened(s.channels)
	}
	return nil
}

// signal makes a non-blocking send on a channel of capacity 1.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// ring is a subscription's buffer: a power-of-two circular array grown on
// demand, so an idle subscription holds none. r and w are sequence numbers
// that only grow: the next notification to read and the next to write.
type ring struct {
	buf  []*Notification
	r, w uint64
}

func (q *ring) len() int { return int(q.w - q.r) }

// pushDropping appends ns, dropping the oldest to keep at most bound, and
// returns how many it dropped.
func (q *ring) pushDropping(ns []*Notification, bound int) (dropped int) {
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
	nb := make([]*Notification, size)
	for i := q.r; i < q.w; i++ {
		nb[i&uint64(size-1)] = q.buf[i&uint64(len(q.buf)-1)]
	}
	q.buf = nb
}

// take removes the k oldest notifications and returns them in a new slice.
// An emptied buffer of more than a few slots is let go, so that a burst
// does not pin its peak size.
func (q *ring) take(k int) []*Notification {
	out := make([]*Notification, k)
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

func ceilPow2(n int) int {
	p := 1
	for p < n {
		p *= 2
	}
	return p
}
