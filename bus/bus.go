package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/puddle/v2"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/backoff"
)

// This file holds the Bus and Subscribe/Close. The channel index is in
// index.go; the goroutine that dials, LISTENs and UNLISTENs in sync.go;
// the one that fans notifications out in dispatch.go.
//
// Lock order: Bus.syncMu, then Bus.mu, then Subscription.mu. Nobody holds
// Bus.mu or Subscription.mu while waiting for the Manager or the network.

// state is where the Bus's connection is.
type state uint8

const (
	stateDown    state = iota // no connection: never dialled yet, or the dial gave up
	stateLive                 // conn is a live member; listened marks are true of it
	stateDead                 // conn died; the Manager is replacing it
	stateSyncing              // conn replaces a dead one; its channels are being set right
)

// A Bus fans notifications out to many subscriptions in one process over
// one listening connection to one database. Every notifying commit wakes
// every listening backend of the database (PostgreSQL 18 and before), so
// one connection serving a thousand subscriptions costs the server far less
// than a thousand connections.
//
// The Bus LISTENs a channel while at least one subscription wants it and
// UNLISTENs it when the last one leaves. Its connection lives in an internal
// [pgnotify.Manager], which checks its health, bounds what it buffers and
// replaces it when it dies: every subscription then sees [pgnotify.Dead]
// and [pgnotify.Recovered].
//
// All methods are safe from any goroutine.
type Bus struct {
	connect pgnotify.ConnectFunc
	cfg     config
	bo      *backoff.Backoff // first dials and replacements alike
	m       *pgnotify.Manager
	ctx     context.Context // cancelled by Close: dials and LISTENs end
	cancel  context.CancelFunc
	kick    chan struct{} // cap 1: the sync goroutine has work
	wg      sync.WaitGroup
	stopped chan struct{} // closed once the Manager is closed and wg is done

	// syncMu serialises changes of the connection's LISTEN set: the sync
	// goroutine's and the dispatcher's after a recovery.
	syncMu sync.Mutex

	received, delivered, dropped atomic.Uint64
	deaths, recoveries           atomic.Uint64

	// testBeforeApply, when a test sets it before the first Subscribe, runs
	// on the sync goroutine just before each LISTEN or UNLISTEN goes out.
	testBeforeApply func(listen bool, channels []string)

	// mu guards the fields below, the index entries and the fields of
	// each Subscription marked as guarded by Bus.mu.
	mu       sync.Mutex
	started  bool  // the sync goroutine runs
	closed   bool  // by Close, or ended for good (then ended says why)
	ended    error // the Bus can never connect again (its pool is closed): what Next and Subscribe return
	state    state
	conn     *pgx.Conn // the live (or syncing) connection
	pid      uint32    // its backend's process ID, while state is stateLive
	deadSent bool      // a Dead event went out and its Recovered has not
	connErr  error     // why the last dial failed, for a Subscribe that gives up
	refused  error     // the first connection is unusable as dialled (deaf); cleared by the next Subscribe
	chans    map[string]*chanEntry
	dirty    map[string]struct{} // channels whose wanted and listened states differ
	subs     map[*Subscription]struct{}
	changed  chan struct{} // closed and replaced whenever a waiter's condition may have changed
}

// New returns a Bus that will get its connection from connect. It starts
// no goroutine and dials nothing until the first [Bus.Subscribe]. Options
// may set the reconnect backoff, the health check, the pending bound and
// a logger; none is required.
func New(connect pgnotify.ConnectFunc, opts ...Option) *Bus {
	b := &Bus{
		connect: connect,
		cfg:     newConfig(opts),
		kick:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
		chans:   make(map[string]*chanEntry),
		dirty:   make(map[string]struct{}),
		subs:    make(map[*Subscription]struct{}),
		changed: make(chan struct{}),
	}
	b.bo = backoff.New(b.cfg.reconnectMin, b.cfg.reconnectMax)
	// The Manager retries at once; redial waits the Bus's own backoff,
	// whose reset rule the Manager's does not have.
	mopts := append([]pgnotify.Option{pgnotify.WithReconnect(b.redial, time.Nanosecond, time.Nanosecond)}, b.cfg.manager...)
	b.m = pgnotify.NewManager(mopts...)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b
}

// Subscribe returns a subscription to channels once the Bus's connection
// LISTENs on every one of them: every notification on them committed after
// Subscribe returns reaches the subscription, in server order, exactly
// once, unless a [pgnotify.Lagged] or [pgnotify.Dead] event says
// otherwise. A channel already listened for another subscription costs no
// round trip.
//
// Every name is checked first ([pgnotify.ValidateChannel]; nothing is sent
// or dialled if one fails); a name repeated is delivered once. The first
// Subscribe makes the Bus dial, and checks that the connection can hear.
// Subscribe fails, with an error saying what to change, for a connection
// whose config sets OnNotification (a pool's, say); with one matching
// [pgnotify.ErrStandby] on a hot standby; and with one matching
// [pgnotify.ErrNoSession] through a transaction- or statement-mode pooler,
// where the LISTEN does not persist into the next transaction. The Bus does
// not redial such a connection by itself: every Subscribe waiting for it
// fails at once, and the next Subscribe dials anew. If the database is down
// or the connection is being replaced, Subscribe waits for it until ctx
// ends, and then returns an error matching ctx.Err() with [errors.Is] and
// subscribes nothing. Whenever Subscribe fails, it returns only once the
// connection listens on nothing that it did not listen on before (waiting
// at most the health-check timeout for an UNLISTEN). The caller's ctx only
// ends the wait: it never cancels a dial or a query, so it never closes the
// Bus's connection.
//
// Options set the subscription's buffer ([WithBuffer]) and overflow policy
// ([WithOverflow]). After [Bus.Close], Subscribe returns
// [pgnotify.ErrClosed]; after the Bus ended for good (its pool was closed),
// an error matching it that says why.
func (b *Bus) Subscribe(ctx context.Context, channels []string, opts ...SubscribeOption) (*Subscription, error) {
	chs := make([]string, 0, len(channels))
	for _, c := range channels {
		if err := pgnotify.ValidateChannel(c); err != nil {
			return nil, err
		}
		if !slices.Contains(chs, c) {
			chs = append(chs, c)
		}
	}
	if len(chs) == 0 {
		return nil, errNoChannels
	}
	s := newSubscription(b, chs, newSubscribeConfig(opts))

	b.mu.Lock()
	if b.closed {
		err := b.closedErrLocked()
		b.mu.Unlock()
		return nil, err
	}
	if !b.started {
		b.started = true
		b.wg.Add(1)
		go b.syncLoop()
	}
	if b.state == stateDown {
		b.refused = nil // this Subscribe's dial decides anew
	}
	kick := false
	for i, ch := range chs {
		kick = b.addLocked(s, i, ch) || kick
	}
	b.subs[s] = struct{}{}
	down := b.state == stateDown
	b.mu.Unlock()
	if kick || down {
		b.kickSync()
	}

	if err := b.awaitListening(ctx, s); err != nil {
		b.mu.Lock()
		if !s.removed {
			b.removeLocked(s)
		}
		b.mu.Unlock()
		s.shut(pgnotify.ErrClosed, false)
		// A LISTEN of these channels may be on the wire even if removeLocked
		// saw nothing to undo: wait for it and for the UNLISTEN after it.
		b.kickSync()
		b.awaitUnlistened(s.channels)
		return nil, err
	}
	return s, nil
}

// awaitListening waits until the live connection listens on every channel
// of s, and marks s active (it gets Dead events from then on).
func (b *Bus) awaitListening(ctx context.Context, s *Subscription) error {
	for {
		b.mu.Lock()
		if b.closed {
			err := b.closedErrLocked()
			b.mu.Unlock()
			return err
		}
		if b.state == stateDown && b.refused != nil {
			err := b.refused
			b.mu.Unlock()
			return fmt.Errorf("pgnotify/bus: subscribe: %w", err)
		}
		ready := b.state == stateLive
		for _, ch := range s.channels {
			e := b.chans[ch]
			if e.err != nil {
				err := e.err
				b.mu.Unlock()
				return fmt.Errorf("pgnotify/bus: subscribe: listen %q: %w", ch, err)
			}
			// An UNLISTEN in flight (the last subscription left just
			// before) is waited for, and the LISTEN that follows it.
			ready = ready && e.listened && !e.inflight
		}
		if ready {
			s.active = true
			b.mu.Unlock()
			return nil
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			b.mu.Lock()
			connErr := b.connErr
			b.mu.Unlock()
			if connErr != nil {
				return fmt.Errorf("pgnotify/bus: subscribe: %w (last connection attempt: %w)", ctx.Err(), connErr)
			}
			return fmt.Errorf("pgnotify/bus: subscribe: %w", ctx.Err())
		}
	}
}

// awaitUnlistened waits, at most one round trip's timeout, until the
// connection neither listens on, nor has a change in flight for, those of
// channels that no subscription wants.
func (b *Bus) awaitUnlistened(channels []string) {
	t := time.NewTimer(b.cfg.roundTrip())
	defer t.Stop()
	for {
		b.mu.Lock()
		done := b.closed || b.state != stateLive
		if !done {
			done = true
			for _, ch := range channels {
				e := b.chans[ch]
				if e != nil && len(e.subs) == 0 && (e.listened || e.inflight) {
					done = false
				}
			}
		}
		changed := b.changed
		b.mu.Unlock()
		if done {
			return
		}
		select {
		case <-changed:
		case <-t.C:
			return
		}
	}
}

// broadcastLocked wakes every goroutine waiting on b.changed. Must be called
// with b.mu held.
func (b *Bus) broadcastLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// kickSync tells the sync goroutine there is work.
func (b *Bus) kickSync() { signal(b.kick) }

// signal makes a non-blocking send on a channel of capacity 1.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// closedErrLocked is what a closed Bus returns: ErrClosed, or why it
// ended. Must be called with b.mu held.
func (b *Bus) closedErrLocked() error {
	if b.ended != nil {
		return b.ended
	}
	return pgnotify.ErrClosed
}

// Close closes every subscription (a blocked [Subscription.Next] returns
// [pgnotify.ErrClosed]) and the Bus's connection, and returns once the
// Bus's goroutines are gone. If ctx ends first, Close returns ctx's error
// then, whatever is still running (a dial that ignores its ctx, say): the
// connection is closed under it, and a connection dialled later is closed
// as soon as the dial returns. Later calls return nil once the first
// Close's work is done, or when their ctx ends.
func (b *Bus) Close(ctx context.Context) error {
	if !b.stop(nil) {
		select {
		case <-b.stopped:
		case <-ctx.Done():
		}
		return nil
	}
	return b.teardown(ctx)
}

// stop closes the Bus and its subscriptions, and reports whether it was
// open. A nil ended is a Close; otherwise the Bus ended for good and ended
// is what its subscriptions and Subscribes return.
func (b *Bus) stop(ended error) bool {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return false
	}
	b.closed, b.ended = true, ended
	subs := make([]*Subscription, 0, len(b.subs))
	for s := range b.subs {
		s.removed = true
		subs = append(subs, s)
	}
	b.broadcastLocked()
	b.mu.Unlock()
	b.cancel()
	why, keep := ended, true
	if why == nil {
		why, keep = pgnotify.ErrClosed, false
	}
	for _, s := range subs {
		s.shut(why, keep)
	}
	return true
}

// teardown closes the Manager and waits for the Bus's goroutines until ctx
// ends. b.stopped is closed once they are gone, whenever that is.
func (b *Bus) teardown(ctx context.Context) error {
	err := b.m.Close(ctx)
	go func() {
		b.wg.Wait()
		close(b.stopped)
	}()
	select {
	case <-b.stopped:
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

// end ends the Bus for good because its connections' source will never
// give another (its pool is closed): every subscription's Next returns an
// error saying so, and the Bus lets its connection and goroutines go
// without waiting for a Close. Safe from any goroutine, also the
// Manager's reconnect goroutine (the teardown runs in its own).
func (b *Bus) end(cause error) {
	err := &endedError{cause: cause}
	if !b.stop(err) {
		return
	}
	if l := b.cfg.logger; l != nil {
		l.Error("pgnotify/bus: ended for good", "err", cause)
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.roundTrip())
		defer cancel()
		b.teardown(ctx)
	}()
}

// permanent reports whether a failed dial can never succeed on a retry:
// the pool [pgnotify.ConnectFromPool] takes connections from is closed.
func permanent(err error) bool { return errors.Is(err, puddle.ErrClosedPool) }
