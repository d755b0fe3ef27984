package pgnotify

import (
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
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
			if b.ctx.Err() == nil && !errors.Is(err, ErrClosed) {
				// The Manager replaces a dead connection until it is
				// closed, so its set never empties: this is a bug, but it
				// must not leave the subscriptions deaf. Dial afresh.
				b.lost(fmt.Errorf("pgnotify: bus: connection lost: %w", err), busDown)
				b.kickSync()
			}
			return
		}
		switch ev.Kind {
		case Batch:
			touched = b.fanOut(ev.Notifications, touched)
		case Dead:
			b.lost(ev.Err, busDead)
		case Recovered:
			b.recovered(ev.Conn)
		}
	}
}

// fanOut hands each notification of a batch to the subscriptions of its
// channel: one shared *Notification, never a copy. Each subscription gets
// its part of the batch with one lock, in server order. The index is read
// under b.mu, but delivery, which may block under OverflowBlock, happens
// without it, so a Close can always release the dispatcher. A subscription
// that joins after the index was read gets none of this batch: it was
// received before its Subscribe could return. touched is scratch space,
// returned for reuse.
func (b *Bus) fanOut(ns []*Notification, touched []*Subscription) []*Subscription {
	b.received.Add(uint64(len(ns)))
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
	for i, s := range touched {
		dropped += s.deliver(s.stage)
		if cap(s.stage) > 64 {
			s.stage = nil
		} else {
			clear(s.stage)
			s.stage = s.stage[:0]
		}
		touched[i] = nil
	}
	b.dropped.Add(uint64(dropped))
	return touched[:0]
}

// lost records that the connection died: nothing is listened any more, the
// subscriptions that were subscribed get one Dead event (a connection that
// dies again before its Recovered makes no second one), and Subscribes
// wait for the replacement. st is busDead when the Manager replaces the
// connection, busDown when the sync goroutine must dial.
func (b *Bus) lost(cause error, st busState) {
	b.deaths.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state, b.conn = st, nil
	for ch, e := range b.chans {
		e.listened, e.inflight, e.err = false, false, nil
		b.markLocked(ch, e)
	}
	if !b.deadSent {
		b.deadSent = true
		ev := Event{Kind: Dead, Err: cause}
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
	b.conn, b.state = conn, busSyncing
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
		b.state, b.conn = busDead, nil
		b.broadcastLocked()
		return
	}
	b.state = busLive
	b.announceRecoveredLocked()
}

// announceRecoveredLocked gives every subscription a Recovered event, once
// per Dead. Must be called with b.mu held.
func (b *Bus) announceRecoveredLocked() {
	if b.deadSent {
		b.deadSent = false
		b.recoveries.Add(1)
		for s := range b.subs {
			s.pushEvent(Event{Kind: Recovered})
		}
	}
	b.broadcastLocked()
}
