package bus

import (
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
)

// dispatch is the Bus's dispatcher, the consumer of its Manager: it fans
// each batch out to the subscriptions of each notification's channel, and
// turns the connection's Dead and Recovered into events of every
// subscription. It returns when the Bus closes.
func (b *Bus) dispatch() {
	defer b.wg.Done()
	var touched []*Subscription
	for {
		ev, err := b.m.Next(b.ctx)
		if err != nil {
			if b.ctx.Err() == nil && !errors.Is(err, pgnotify.ErrClosed) {
				// The Manager replaces a dead connection until it is
				// closed, so its set never empties: this is a bug, but it
				// must not leave the subscriptions deaf. Dial afresh.
				b.lost(fmt.Errorf("pgnotify/bus: connection lost: %w", err), stateDown)
				b.kickSync()
			}
			return
		}
		switch ev.Kind {
		case pgnotify.Batch:
			touched = b.fanOut(ev.Notifications, touched)
		case pgnotify.Dead:
			b.lost(ev.Err, stateDead)
		case pgnotify.Recovered:
			b.recovered(ev.Conn)
		}
	}
}

// fanOut hands each notification of a batch to the subscriptions of its
// channel: one shared *Notification, never a copy. Each subscription gets
// its part of the batch with one lock, in server order. The index is read
// under b.mu, but delivery, which may block under OverflowBlock, happens
// without it, so a Close can always release the dispatcher. Every
// OverflowDropOldest subscription gets its part before the dispatcher
// waits for any OverflowBlock one, so a stalled blocking reader delays the
// others only from the next batch on. A subscription that joins after the
// index was read gets none of this batch: it was received before its
// Subscribe could return. touched is scratch space, returned for reuse.
func (b *Bus) fanOut(ns []*pgnotify.Notification, touched []*Subscription) []*Subscription {
	b.received.Add(uint64(len(ns)))
	if len(ns) > 0 && oneChannel(ns) {
		return b.fanOutOne(ns, touched)
	}
	delivered := 0
	b.mu.Lock()
	for _, n := range ns {
		e := b.chans[n.Channel]
		if e == nil {
			continue
		}
		delivered += len(e.subs)
		for _, r := range e.subs {
			s := r.s
			if len(s.stage) == 0 {
				touched = append(touched, s)
			}
			s.stage = append(s.stage, n)
		}
	}
	b.mu.Unlock()
	b.delivered.Add(uint64(delivered))
	dropped := 0
	for _, p := range [...]Overflow{OverflowDropOldest, OverflowBlock} {
		for _, s := range touched {
			if s.overflow != p {
				continue
			}
			dropped += s.deliver(s.stage)
			if cap(s.stage) > 64 {
				s.stage = nil
			} else {
				clear(s.stage)
				s.stage = s.stage[:0]
			}
		}
	}
	clear(touched)
	b.dropped.Add(uint64(dropped))
	return touched[:0]
}

// lost records that the connection died: nothing is listened any more, the
// subscriptions that were subscribed get one Dead event (a connection that
// dies again before its Recovered makes no second one), and Subscribes
// wait for the replacement. st is stateDead when the Manager replaces the
// connection, stateDown when the sync goroutine must dial.
func (b *Bus) lost(cause error, st state) {
	b.deaths.Add(1)
	b.bo.Down()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state, b.conn, b.pid = st, nil, 0
	for ch, e := range b.chans {
		e.listened, e.inflight, e.err = false, false, nil
		b.markLocked(ch, e)
	}
	if !b.deadSent {
		b.deadSent = true
		ev := pgnotify.Event{Kind: pgnotify.Dead, Err: cause}
		for s := range b.subs {
			if s.active {
				s.pushEvent(ev)
			}
		}
	}
	b.broadcastLocked()
}

// recovered adopts conn, the Manager's replacement of the dead connection:
// it sets conn's channels right, then yields Recovered to every
// subscription, before any notification conn receives is dispatched.
func (b *Bus) recovered(conn *pgx.Conn) {
	b.syncMu.Lock()
	defer b.syncMu.Unlock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.conn, b.state = conn, stateSyncing
	b.mu.Unlock()
	ok := b.resync(conn)
	// A refused LISTEN leaves conn usable (the Subscribes that wanted it
	// fail); a dead conn has its Dead event on the way.
	alive := ok || slices.Contains(b.m.Conns(), conn)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.conn != conn {
		return
	}
	if !alive {
		b.state, b.conn = stateDead, nil
		b.broadcastLocked()
		return
	}
	b.state, b.pid = stateLive, conn.PgConn().PID()
	b.announceRecoveredLocked()
}

// announceRecoveredLocked gives every subscription a Recovered event, once
// per Dead. Must be called with b.mu held.
func (b *Bus) announceRecoveredLocked() {
	if b.deadSent {
		b.deadSent = false
		b.recoveries.Add(1)
		for s := range b.subs {
			s.pushEvent(pgnotify.Event{Kind: pgnotify.Recovered})
		}
	}
	b.broadcastLocked()
}

// oneChannel reports whether every notification of ns is on ns[0]'s
// channel.
func oneChannel(ns []*pgnotify.Notification) bool {
	for _, n := range ns[1:] {
		if n.Channel != ns[0].Channel {
			return false
		}
	}
	return true
}

// fanOutOne is fanOut for a batch on one channel, the common case: every
// subscription of the channel gets the whole batch, so it is delivered
// from ns itself, with no staging copy per subscription (which cost a
// slice grown and dropped per subscription and batch).
func (b *Bus) fanOutOne(ns []*pgnotify.Notification, touched []*Subscription) []*Subscription {
	b.mu.Lock()
	if e := b.chans[ns[0].Channel]; e != nil {
		for _, r := range e.subs {
			touched = append(touched, r.s)
		}
	}
	b.mu.Unlock()
	b.delivered.Add(uint64(len(ns) * len(touched)))
	dropped := 0
	for _, p := range [...]Overflow{OverflowDropOldest, OverflowBlock} {
		for _, s := range touched {
			if s.overflow == p {
				dropped += s.deliver(ns)
			}
		}
	}
	clear(touched)
	b.dropped.Add(uint64(dropped))
	return touched[:0]
}
