package pgnotify

import (
	"context"
	"errors"
	"io"
	"sync"

	"golang.org/x/sync/errgroup"
)

// A drainPass is one drain pass: a round trip on every live member, made
// by their waiters, at most drainConcurrency at a time, then every event
// ready at its end. A member that dies in the pass yields a Dead event; it
// never fails the pass or cancels the others. Its life, under Manager.mu:
//
//	(none) ──currentPass──► passRunning ──round trips over, currentPass──►
//	passCollected ──last event taken: endPass, or leftoverLocked──► (none)
//
// m.pass holds the pass from passRunning until it ends. Its round trips
// run on their own timeouts, never on the consumer's context (pgx closes a
// connection whose query is cancelled): a Next or Drain whose ctx ends
// leaves the pass running, and the next call picks it up.
type drainPass struct {
	done   chan struct{} // closed when every round trip is over
	state  passState     // guarded by Manager.mu
	events []Event       // set on collecting; the consumer's after
}

type passState uint8

const (
	passRunning   passState = iota // round trips in flight
	passCollected                  // events taken from the ready queue, being yielded
)

// startPass begins a pass over mbs.
func (m *Manager) startPass(mbs []*member) *drainPass {
	p := &drainPass{done: make(chan struct{})}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(p.done)
		fanOut(len(mbs), func(i int) error {
			r := newRequest(reqRoundTrip)
			if mbs[i].submit(r) == nil {
				<-r.done
			}
			return nil
		})
	}()
	return p
}

// currentPass returns the pass in progress, starting one if there is none,
// once its round trips are over and its events collected.
func (m *Manager) currentPass(ctx context.Context) (*drainPass, error) {
	m.mu.Lock()
	if m.closedLocked() {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	p := m.pass
	if p == nil {
		p = m.startPass(m.membersLocked(false))
		m.pass = p
	}
	m.mu.Unlock()
	select {
	case <-p.done:
	case <-m.ctx.Done(): // closed
		return nil, ErrClosed
	case <-ctx.Done():
		// The round trips go on under their own timeouts; what they
		// bring stays pending for the next call.
		return nil, ctx.Err()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closedLocked() {
		return nil, ErrClosed
	}
	if p.state == passRunning {
		p.state = passCollected
		p.events = m.collectLocked()
	}
	return p, nil
}

// nextInPass is Next with a zero timeout: it starts a pass if none is in
// progress, waits for its round trips, then yields its events one per call
// and io.EOF at its end.
func (m *Manager) nextInPass(ctx context.Context) (Event, error) {
	p, err := m.currentPass(ctx)
	if err != nil {
		return Event{}, err
	}
	if len(p.events) > 0 {
		ev := p.events[0]
		p.events[0] = Event{}
		p.events = p.events[1:]
		return ev, nil
	}
	m.endPass(p)
	return Event{}, io.EOF
}

// leftoverLocked yields what remains of a drain pass whose events were
// collected but not all yielded when the timeout changed. Must be called
// with m.mu held.
func (m *Manager) leftoverLocked() (Event, bool) {
	p := m.pass
	if p == nil || p.state != passCollected {
		return Event{}, false
	}
	if len(p.events) == 0 {
		m.pass = nil
		return Event{}, false
	}
	ev := p.events[0]
	p.events = p.events[1:]
	return ev, true
}

// endPass returns the events of p not yet yielded and ends it.
func (m *Manager) endPass(p *drainPass) []Event {
	evs := p.events
	p.events = nil
	m.mu.Lock()
	if m.pass == p {
		m.pass = nil
	}
	m.mu.Unlock()
	return evs
}

// Drain makes one drain pass, whatever the timeout, and returns its events:
// a round trip on every live member (concurrently, each under its own
// timeout) and then every event ready at its end. The events hold every
// notification committed before Drain was called on a channel a member
// listens on. If ctx ends first, Drain returns what it has with ctx's error;
// the round trips finish in the background and what they bring stays
// pending. Drain is the consumer's, like Next.
func (m *Manager) Drain(ctx context.Context) ([]Event, error) {
	if err := m.made(); err != nil {
		return nil, err
	}
	if !m.consuming.CompareAndSwap(false, true) {
		return nil, errConcurrentNext
	}
	defer m.consuming.Store(false)
	var out []Event
	m.mu.Lock()
	stale := m.pass != nil
	m.mu.Unlock()
	if stale {
		// A pass that began before this call may miss what was committed
		// just before it: take its events, then make a fresh pass.
		p, err := m.currentPass(ctx)
		if err != nil {
			return out, err
		}
		out = append(out, m.endPass(p)...)
	}
	p, err := m.currentPass(ctx)
	if err != nil {
		return out, err
	}
	return append(out, m.endPass(p)...), nil
}

// fanOut runs fn(i) for i in [0, n), at most drainConcurrency at a time, and
// returns the errors joined. One failure does not stop the others: each is
// a round trip on its own connection.
func fanOut(n int, fn func(i int) error) error {
	errs := make([]error, n)
	var g errgroup.Group
	g.SetLimit(drainConcurrency)
	for i := range n {
		g.Go(func() error {
			errs[i] = fn(i)
			return nil
		})
	}
	g.Wait()
	return errors.Join(errs...)
}

// waitDone returns a channel closed when wg's count reaches zero.
func waitDone(wg *sync.WaitGroup) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}
