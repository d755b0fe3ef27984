package bus

import (
	"context"
	"iter"
	"slices"
	"sync"

	"github.com/seed-c59d106d/pgnotify"
)

// A Subscription receives the notifications of its channels from a [Bus],
// through [Subscription.Next] or [Subscription.Events]. Read it from one
// goroutine at a time (a second goroutine in Next gets an error at once);
// different subscriptions are independent. Close is safe from any
// goroutine.
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
	stage []*pgnotify.Notification

	// mu guards the fields below. The dispatcher (deliver, pushEvent) and
	// the reader (Next) meet here; neither holds it while blocked.
	mu      sync.Mutex
	q       ring
	seen    uint64      // sequence number up to which the reader was told: yielded or reported lost
	ctrl    []ctrlEvent // Dead and Recovered, in order, each placed after the notifications before it
	reading bool        // a goroutine is inside Next
	waiting bool        // the reader is blocked in Next
	blocked bool        // the dispatcher is blocked on a full buffer (OverflowBlock)
	closed  bool
	keep    bool  // closed, but what was delivered before is still read first (the Bus ended for good)
	err     error // what Next returns once closed: ErrClosed, or why the Bus ended
}

// ctrlEvent is a Dead or Recovered event placed in a subscription's stream:
// it is yielded once every notification numbered below at was yielded or
// reported lost.
type ctrlEvent struct {
	at uint64
	ev pgnotify.Event
}

func newSubscription(b *Bus, channels []string, cfg subscribeConfig) *Subscription {
	return &Subscription{
		err:      pgnotify.ErrClosed,
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

// Next returns the subscription's next event: a [pgnotify.Batch] of
// notifications of its channels, in server order; [pgnotify.Lagged] when
// its buffer overflowed under [OverflowDropOldest] (Dropped says how many
// were lost, just before the next Batch); [pgnotify.Dead] when the Bus's
// connection died (what is committed from then until Recovered is lost);
// [pgnotify.Recovered] when a new connection listens on the channels
// again, the moment to resynchronise from the application's own tables.
// A subscription whose Subscribe returned before the death gets Dead, then
// Recovered; one that was subscribing during the outage may get Recovered
// without Dead. Conn and Replaced are nil in every event.
//
// A Batch's slice is the caller's, but its *Notification values may be
// shared with other subscriptions: treat them as read-only.
//
// Next blocks until an event, ctx ends (it returns ctx's error) or the
// subscription or its Bus is closed (it returns [pgnotify.ErrClosed], also
// on every later call; if the Bus ended for good because its pool was
// closed, an error matching ErrClosed that says so). Call it from one
// goroutine at a time: a second goroutine that calls Next while the first
// is inside gets an error at once.
func (s *Subscription) Next(ctx context.Context) (pgnotify.Event, error) {
	s.mu.Lock()
	if s.reading {
		s.mu.Unlock()
		return pgnotify.Event{}, errConcurrentNext
	}
	s.reading = true
	defer func() {
		s.mu.Lock()
		s.reading = false
		s.mu.Unlock()
	}()
	for {
		if s.closed && !s.keep {
			err := s.err
			s.mu.Unlock()
			return pgnotify.Event{}, err
		}
		if ev, ok := s.popLocked(); ok {
			s.mu.Unlock()
			return ev, nil
		}
		if s.closed {
			err := s.err
			s.mu.Unlock()
			return pgnotify.Event{}, err
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
			return pgnotify.Event{}, ctx.Err()
		}
		s.mu.Lock()
	}
}

// Events ranges over [Subscription.Next]: a single-use stream for one
// goroutine. An error (ctx's, or [pgnotify.ErrClosed] once the
// subscription or the Bus is closed) is yielded once, last.
func (s *Subscription) Events(ctx context.Context) iter.Seq2[pgnotify.Event, error] {
	return func(yield func(pgnotify.Event, error) bool) {
		for {
			ev, err := s.Next(ctx)
			if err != nil {
				yield(pgnotify.Event{}, err)
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
func (s *Subscription) popLocked() (pgnotify.Event, bool) {
	if len(s.ctrl) > 0 && s.ctrl[0].at <= s.q.r {
		c := s.ctrl[0]
		if s.seen < c.at {
			lost := c.at - s.seen
			s.seen = c.at
			return pgnotify.Event{Kind: pgnotify.Lagged, Dropped: int(lost)}, true
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
		return pgnotify.Event{Kind: pgnotify.Lagged, Dropped: int(lost)}, true
	}
	end := s.q.w
	if len(s.ctrl) > 0 {
		end = s.ctrl[0].at
	}
	if end == s.q.r {
		return pgnotify.Event{}, false
	}
	ns := s.q.take(int(end - s.q.r))
	s.seen = s.q.r
	if s.blocked {
		s.blocked = false
		signal(s.space)
	}
	return pgnotify.Event{Kind: pgnotify.Batch, Notifications: ns}, true
}

// deliver appends ns to the buffer under the subscription's policy, and
// wakes the reader. Under OverflowBlock it waits for room or for the
// subscription to close. It returns how many notifications were dropped.
// Called by the dispatcher only.
func (s *Subscription) deliver(ns []*pgnotify.Notification) (dropped int) {
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
func (s *Subscription) pushEvent(ev pgnotify.Event) {
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

// shut marks the subscription closed, with err for Next to return, and
// releases its reader and a dispatcher blocked on it. The buffer is let
// go, unless keep: then Next yields what it holds (a Dead event, say)
// before err.
func (s *Subscription) shut(err error, keep bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed, s.err, s.keep = true, err, keep
	if !keep {
		s.q = ring{}
		s.ctrl = nil
	}
	close(s.done)
}

// Close ends the subscription: a blocked [Subscription.Next] returns
// [pgnotify.ErrClosed], as does every later call. If it was the last subscription of
// a channel, Close returns once the Bus's connection has UNLISTENed it (one
// round trip, waited for at most the health-check timeout; see
// [WithHealthCheck]), so that the connection's pg_listening_channels() is
// the union of the live subscriptions' channels. Close is safe from any
// goroutine, also while Next is blocked, and returns nil, also when called
// again.
func (s *Subscription) Close() error {
	b := s.bus
	b.mu.Lock()
	if s.removed {
		b.mu.Unlock()
		s.shut(pgnotify.ErrClosed, false) // Bus.Close may be shutting it at this moment
		return nil
	}
	last := b.removeLocked(s)
	b.mu.Unlock()
	s.shut(pgnotify.ErrClosed, false)
	if last {
		b.kickSync()
		b.awaitUnlistened(s.channels)
	}
	return nil
}
