package pgnotify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// This file holds the Bus, its channel index and Subscribe/Close. The
// goroutine that LISTENs and UNLISTENs (and dials) is in bus_sync.go, the
// one that fans notifications out in bus_dispatch.go.
//
// Lock order: Bus.syncMu, then Bus.mu, then Subscription.mu. Nobody holds
// Bus.mu or Subscription.mu while waiting for the Manager or the network.

// A ConnectFunc opens a new connection to the database, for a [Bus]: its
// first connection and each replacement. The connection must keep pgx's
// default notification handling (no OnNotification in its config). The
// Bus closes it.
type ConnectFunc func(ctx context.Context) (*pgx.Conn, error)

// busState is where the Bus's connection is.
type busState uint8

const (
	busDown    busState = iota // no connection: never dialled yet
	busLive                    // conn is a live member; listened marks are true of it
	busDead                    // conn died; the Manager is replacing it
	busSyncing                 // conn replaces a dead one; its channels are being set right
)

// A Bus fans notifications out to many subscriptions in one process over
// one listening connection to one database. Every notifying commit wakes
// every listening backend of the database (PostgreSQL 18 and before), so
// one connection serving a thousand subscriptions costs the server far less
// than a thousand connections.
//
// The Bus LISTENs a channel while at least one subscription wants it and
// UNLISTENs it when the last one leaves. Its connection lives in an internal
// [Manager], which checks its health, bounds what it buffers and replaces
// it when it dies: every subscription then sees [Dead] and [Recovered].
//
// All methods are safe from any goroutine.
type Bus struct {
	connect ConnectFunc
	cfg     busConfig
	m       *Manager
	ctx     context.Context // cancelled by Close: dials and LISTENs end
	cancel  context.CancelFunc
	kick    chan struct{} // cap 1: the sync goroutine has work
	wg      sync.WaitGroup

	// syncMu serialises changes of the connection's LISTEN set: the sync
	// goroutine's and the dispatcher's after a recovery.
	syncMu sync.Mutex

	received, delivered, dropped atomic.Uint64
	deaths, recoveries           atomic.Uint64

	mu       sync.Mutex
	started  bool // the sync goroutine runs
	closed   bool
	state    busState
	conn     *pgx.Conn // the live (or syncing) connection
	deadSent bool      // a Dead event went out and its Recovered has not
	connErr  error     // why the last dial failed, for a Subscribe that gives up
	chans    map[string]*chanEntry
	dirty    map[string]struct{} // channels whose wanted and listened states differ
	subs     map[*Subscription]struct{}
	changed  chan struct{} // closed and replaced whenever a waiter's condition may have changed
}

// chanEntry is one channel of the index: the subscriptions that want it and
// whether the connection listens on it. Guarded by Bus.mu.
type chanEntry struct {
	subs     []subRef
	listened bool  // LISTEN done on the current connection
	inflight bool  // a LISTEN or UNLISTEN of it is on the wire
	err      error // the server refused to LISTEN it; waiting Subscribes fail
}

// subRef is a subscription in a channel entry: s.channels[i] is the channel.
type subRef struct {
	s *Subscription
	i int
}

// NewBus returns a Bus that will get its connection from connect. It
// starts no goroutine and dials nothing until the first
// [Bus.Subscribe]. Options may set the reconnect backoff, the health
// check, the pending bound and a logger; none is required.
func NewBus(connect ConnectFunc, opts ...BusOption) *Bus {
	b := &Bus{
		connect: connect,
		cfg:     newBusConfig(opts),
		kick:    make(chan struct{}, 1),
		chans:   make(map[string]*chanEntry),
		dirty:   make(map[string]struct{}),
		subs:    make(map[*Subscription]struct{}),
		changed: make(chan struct{}),
	}
	dial := func(ctx context.Context, _ Garbage) (*pgx.Conn, error) { return b.connectOnce(ctx) }
	mopts := append([]Option{WithReconnect(dial, b.cfg.reconnectMin, b.cfg.reconnectMax)}, b.cfg.manager...)
	b.m = NewManager(mopts...)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b
}

// Subscribe returns a subscription to channels once the Bus's connection
// LISTENs on every one of them: every notification on them committed after
// Subscribe returns reaches the subscription, in server order, exactly
// once, unless a [Lagged] or [Dead] event says otherwise. A channel already
// listened for another subscription costs no round trip.
//
// Every name is checked first ([ValidateChannel]; nothing is sent or
// dialled if one fails); a name repeated is delivered once. The first
// Subscribe makes the Bus dial. If the database is down or the connection
// is being replaced, Subscribe waits for it until ctx ends, and then
// returns an error matching ctx.Err() with [errors.Is] and subscribes
// nothing, leaving nothing listened that was not before. The caller's ctx
// only ends the wait: it never cancels a dial or a query, so it never
// closes the Bus's connection.
//
// Options set the subscription's buffer ([WithBuffer]) and overflow policy
// ([WithOverflow]). After [Bus.Close], Subscribe returns [ErrClosed].
func (b *Bus) Subscribe(ctx context.Context, channels []string, opts ...SubscribeOption) (*Subscription, error) {
	chs := make([]string, 0, len(channels))
	for _, c := range channels {
		if err := ValidateChannel(c); err != nil {
			return nil, err
		}
		if !slices.Contains(chs, c) {
			chs = append(chs, c)
		}
	}
	if len(chs) == 0 {
		return nil, errors.New("pgnotify: subscribe: no channels")
	}
	s := newSubscription(b, chs, newSubscribeConfig(opts))

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	if !b.started {
		b.started = true
		b.wg.Add(1)
		go b.syncLoop()
	}
	kick := false
	for i, ch := range chs {
		e := b.chans[ch]
		if e == nil {
			e = &chanEntry{}
			b.chans[ch] = e
		}
		s.pos[i] = len(e.subs)
		e.subs = append(e.subs, subRef{s: s, i: i})
		kick = b.markLocked(ch, e) || kick
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	if kick || b.stateIs(busDown) {
		b.kickSync()
	}

	if err := b.awaitListening(ctx, s); err != nil {
		b.mu.Lock()
		last := !s.removed && b.removeLocked(s)
		b.mu.Unlock()
		s.shut()
		if last {
			b.kickSync()
			b.awaitUnlistened(s.channels)
		}
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
			b.mu.Unlock()
			return ErrClosed
		}
		ready := b.state == busLive
		for _, ch := range s.channels {
			e := b.chans[ch]
			if e.err != nil {
				err := e.err
				b.mu.Unlock()
				return fmt.Errorf("pgnotify: subscribe: listen %q: %w", ch, err)
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
				return fmt.Errorf("pgnotify: subscribe: %w (last connection attempt: %w)", ctx.Err(), connErr)
			}
			return fmt.Errorf("pgnotify: subscribe: %w", ctx.Err())
		}
	}
}

// awaitUnlistened waits, at most one round trip's timeout, until the
// connection no longer listens on those of channels that no subscription
// wants.
func (b *Bus) awaitUnlistened(channels []string) {
	t := time.NewTimer(b.cfg.roundTrip())
	defer t.Stop()
	for {
		b.mu.Lock()
		done := b.closed || b.state != busLive
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

// removeLocked takes s out of the index and reports whether a channel lost
// its last subscription and must be UNLISTENed. Must be called with b.mu
// held.
func (b *Bus) removeLocked(s *Subscription) (unlisten bool) {
	s.removed = true
	delete(b.subs, s)
	for i, ch := range s.channels {
		e := b.chans[ch]
		p, last := s.pos[i], len(e.subs)-1
		moved := e.subs[last]
		e.subs[p] = moved
		moved.s.pos[moved.i] = p
		e.subs[last] = subRef{}
		e.subs = e.subs[:last]
		if len(e.subs) == 0 && cap(e.subs) > 64 {
			e.subs = nil
		}
		unlisten = b.markLocked(ch, e) || unlisten
	}
	return unlisten
}

// markLocked records whether ch needs a LISTEN or UNLISTEN, drops an entry
// nobody wants or listens, and reports whether ch is dirty. Must be called
// with b.mu held.
func (b *Bus) markLocked(ch string, e *chanEntry) bool {
	wanted := len(e.subs) > 0
	if !wanted && !e.listened && !e.inflight {
		delete(b.chans, ch)
		delete(b.dirty, ch)
		return false
	}
	if wanted != e.listened {
		b.dirty[ch] = struct{}{}
		return true
	}
	delete(b.dirty, ch)
	return false
}

// broadcastLocked wakes every goroutine waiting on b.changed. Must be called
// with b.mu held.
func (b *Bus) broadcastLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *Bus) stateIs(st busState) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state == st
}

// kickSync tells the sync goroutine there is work.
func (b *Bus) kickSync() { signal(b.kick) }

// Close closes every subscription (a blocked [Subscription.Next] returns
// [ErrClosed]) and the Bus's connection, and returns once the Bus's
// goroutines are gone. If ctx ends first, the connection is closed under
// them and Close returns ctx's error. Later calls return nil.
func (b *Bus) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	subs := make([]*Subscription, 0, len(b.subs))
	for s := range b.subs {
		s.removed = true
		subs = append(subs, s)
	}
	b.broadcastLocked()
	b.mu.Unlock()
	b.cancel()
	for _, s := range subs {
		s.shut()
	}
	err := b.m.Close(ctx)
	done := waitDone(&b.wg)
	select {
	case <-done:
	case <-ctx.Done():
		// m.Close closed the sockets: what is left ends at once.
		<-done
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

// BusStats are a Bus's counters, from [Bus.Stats]. Counts are totals since
// [NewBus]; Subscriptions and Channels are the state now.
type BusStats struct {
	Subscriptions int    // live subscriptions (including those still subscribing)
	Channels      int    // channels the connection LISTENs on now
	Received      uint64 // notifications the connection received
	Delivered     uint64 // notifications handed to subscriptions (one per subscription)
	Dropped       uint64 // of those, dropped by OverflowDropOldest (reported by Lagged)
	Deaths        uint64 // times the connection died
	Reconnects    uint64 // times a new connection replaced a dead one
}

// Stats returns the Bus's counters. It is safe from any goroutine.
func (b *Bus) Stats() BusStats {
	s := BusStats{
		Received:   b.received.Load(),
		Delivered:  b.delivered.Load(),
		Dropped:    b.dropped.Load(),
		Deaths:     b.deaths.Load(),
		Reconnects: b.recoveries.Load(),
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s.Subscriptions = len(b.subs)
	if b.state == busLive {
		for _, e := range b.chans {
			if e.listened {
				s.Channels++
			}
		}
	}
	return s
}
