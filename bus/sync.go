package bus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
)

// syncLoop is the Bus's sync goroutine: it dials the first connection when
// a subscription wants one, and makes the live connection LISTEN and
// UNLISTEN until its channels are those the subscriptions want. Its changes
// go through the Manager (Listen, Unlisten), under the Bus's own context,
// never a caller's.
func (b *Bus) syncLoop() {
	defer b.wg.Done()
	for {
		select {
		case <-b.kick:
		case <-b.ctx.Done():
			return
		}
		b.syncMu.Lock()
		b.syncOnce()
		b.syncMu.Unlock()
	}
}

// syncOnce dials if needed, then converges. Must be called with b.syncMu
// held.
func (b *Bus) syncOnce() {
	b.mu.Lock()
	// A refused connection fails the Subscribes waiting for it: only a
	// Subscribe made since (which clears refused) may dial again.
	st, conn, want := b.state, b.conn, len(b.subs) > 0 && b.refused == nil
	b.mu.Unlock()
	switch st {
	case stateDown:
		if want {
			b.dial()
		}
	case stateLive:
		b.converge(conn)
	}
	// stateDead and stateSyncing: the dispatcher sets the channels right when
	// the replacement arrives.
}

// dial opens the Bus's first connection, retrying with backoff while some
// subscription wants it and the Bus is open, checks that it can hear (its
// own notifications reach it, on a primary, in a session that persists),
// adds it to the Manager, makes it listen, and starts the dispatcher. A
// connection that can never hear as dialled is not retried: the Subscribes
// waiting now fail with why, and the next Subscribe dials again. Must be
// called with b.syncMu held.
func (b *Bus) dial() {
	for attempt := 1; ; attempt++ {
		conn, err := b.connectOnce(b.ctx)
		if err == nil {
			err = hearsItself(b.ctx, conn, b.cfg.roundTrip())
			if err == nil {
				err = b.m.Add(b.ctx, conn)
			}
			if err != nil {
				closeQuietly(conn)
			}
			if err != nil && b.ctx.Err() == nil && unusable(err) {
				b.mu.Lock()
				b.refused, b.connErr = err, err
				b.broadcastLocked()
				b.mu.Unlock()
				if l := b.cfg.logger; l != nil {
					l.Error("pgnotify/bus: connection refused: it cannot hear as dialled", "err", err)
				}
				return
			}
		}
		if err == nil {
			b.bo.Up()
			b.mu.Lock()
			b.conn, b.pid, b.state, b.connErr = conn, conn.PgConn().PID(), stateLive, nil
			b.broadcastLocked()
			b.mu.Unlock()
			b.converge(conn)
			b.mu.Lock()
			if b.conn == conn {
				// After a loss the dispatcher could not hand to the
				// Manager's recovery (see dispatch), this is the gap signal.
				b.announceRecoveredLocked()
			}
			b.mu.Unlock()
			b.wg.Add(1)
			go b.dispatch()
			return
		}
		if b.ctx.Err() != nil {
			return
		}
		if permanent(err) {
			b.end(err)
			return
		}
		if l := b.cfg.logger; l != nil {
			l.Warn("pgnotify/bus: connect failed", "attempt", attempt, "err", err)
		}
		b.mu.Lock()
		b.connErr = err
		want := len(b.subs) > 0
		b.mu.Unlock()
		if !want {
			// Nobody waits any more: dial again at the next Subscribe.
			return
		}
		if sleep(b.ctx, b.bo.Next()) != nil {
			return
		}
	}
}

// redial is the Manager's DialFunc: it replaces the Bus's dead connection
// after the Bus's backoff (the Manager itself retries at once). A source
// that will never give a connection again (a closed pool) ends the Bus.
func (b *Bus) redial(ctx context.Context, _ pgnotify.Garbage) (*pgx.Conn, error) {
	// The Manager may call this before the dispatcher has taken the Dead
	// event (lost calls Down too): Down applies the reset rule once per
	// outage, whoever is first.
	b.bo.Down()
	if err := sleep(ctx, b.bo.Next()); err != nil {
		return nil, err
	}
	conn, err := b.connectOnce(ctx)
	if err != nil {
		if permanent(err) && ctx.Err() == nil {
			b.end(err)
		}
		return nil, err
	}
	b.bo.Up()
	return conn, nil
}

// sleep waits d, or until ctx ends (it returns ctx's error).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// connectOnce dials one connection, bounded in time, and makes sure it
// listens on nothing (a connection from a pool may have been used for
// LISTEN before).
func (b *Bus) connectOnce(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, err := b.connect(ctx)
	if err != nil {
		return nil, err
	}
	if conn == nil {
		return nil, errNilConn
	}
	if err := pgnotify.UnlistenAll(ctx, conn); err != nil {
		closeQuietly(conn)
		return nil, err
	}
	return conn, nil
}

// unusable reports whether err, from the checks of a first connection,
// says that the connection can never hear as dialled, so that dialling the
// same way again would fail the same way: its notifications go to its
// config's OnNotification, it is on a hot standby, or its LISTEN does not
// persist (a transaction-mode pooler).
func unusable(err error) bool {
	return errors.Is(err, errNotHeard) || errors.Is(err, pgnotify.ErrStandby) || errors.Is(err, pgnotify.ErrNoSession)
}

// hearsItself checks that conn can hear, as the Manager checks each
// replacement: it LISTENs a private channel, NOTIFYs it, and UNLISTENs it.
// The LISTEN fails with an error matching [pgnotify.ErrStandby] on a hot
// standby, and with one matching [pgnotify.ErrNoSession] when it did not
// persist into the next transaction (a transaction-mode pooler; this costs
// a round trip only behind a pooler). A connection whose config sets
// OnNotification (a pool's, say) fails with errNotHeard: pgx hands its
// notifications to that function, and the Bus would never see one. conn
// listens on nothing else, so whatever else it buffered is stale and
// dropped. The NOTIFY wakes every listening backend of the database once,
// on the Bus's first connection only. Any other error is the connection's
// failure, wrapped.
func hearsItself(ctx context.Context, conn *pgx.Conn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The name is unique: behind a pooler the notification's PID is the
	// server's, not the key pgx was given, so it cannot tell the probe.
	probe := fmt.Sprintf("pgnotify.bus.probe.%d.%x", conn.PgConn().PID(), rand.Uint64())
	if err := pgnotify.Listen(ctx, conn, probe); err != nil {
		return err
	}
	// The server delivers a session's own notification before it reports
	// ready, so it is in pgx's buffer once Exec returns.
	if _, err := conn.PgConn().Exec(ctx, "NOTIFY "+pgx.Identifier{probe}.Sanitize()).ReadAll(); err != nil {
		return fmt.Errorf("pgnotify/bus: notify itself: %w", err)
	}
	if err := pgnotify.Unlisten(ctx, conn, probe); err != nil {
		return err
	}
	done, stop := context.WithCancel(context.Background())
	stop()
	for {
		n, err := conn.WaitForNotification(done)
		if n == nil || err != nil {
			return errNotHeard
		}
		if n.Channel == probe {
			for n != nil && err == nil { // drop the rest
				n, err = conn.WaitForNotification(done)
			}
			return nil
		}
	}
}

// closeQuietly closes a connection the Bus dialled and could not use.
func closeQuietly(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn.Close(ctx)
}

// converge LISTENs and UNLISTENs on conn until its channels are those the
// subscriptions want, and reports whether it got there. It stops when conn
// is no longer the Bus's connection, died, or the server refused a change.
// Must be called with b.syncMu held.
func (b *Bus) converge(conn *pgx.Conn) bool {
	for {
		b.mu.Lock()
		if b.closed || b.conn != conn {
			b.mu.Unlock()
			return false
		}
		var listen, unlisten []string
		for ch := range b.dirty {
			e := b.chans[ch]
			switch {
			case len(e.subs) > 0 && e.err == nil:
				listen = append(listen, ch)
			case len(e.subs) == 0:
				unlisten = append(unlisten, ch)
			default:
				continue
			}
			e.inflight = true
		}
		b.mu.Unlock()
		if len(listen) == 0 && len(unlisten) == 0 {
			return true
		}
		slices.Sort(listen)
		slices.Sort(unlisten)
		okL := b.apply(conn, listen, true)
		okU := b.apply(conn, unlisten, false)
		if !okL || !okU {
			return false
		}
	}
}

// apply makes conn LISTEN (or UNLISTEN) channels, one round trip, and
// records the outcome; it reports whether it succeeded. Must be called
// with b.syncMu held.
func (b *Bus) apply(conn *pgx.Conn, channels []string, listen bool) bool {
	if len(channels) == 0 {
		return true
	}
	var err error
	if b.testBeforeApply != nil {
		b.testBeforeApply(listen, channels)
	}
	if listen {
		err = b.m.Listen(b.ctx, conn, channels...)
	} else {
		err = b.m.Unlisten(b.ctx, conn, channels...)
	}
	// A failure on a connection that is still a live member is the
	// server's answer (LISTEN is refused on a hot standby, say); any other
	// means conn died, and its Dead event is on its way to the dispatcher.
	refused := err != nil && b.ctx.Err() == nil && slices.Contains(b.m.Conns(), conn)

	b.mu.Lock()
	defer b.mu.Unlock()
	// conn may have died just after the change: then the listened marks
	// belong to its replacement, which resync sets from the server.
	current := b.conn == conn
	for _, ch := range channels {
		e := b.chans[ch]
		if e == nil {
			// Dropped meanwhile: impossible while inflight, but harmless.
			continue
		}
		e.inflight = false
		switch {
		case !current:
		case err == nil:
			e.listened = listen
		case refused && listen:
			e.err = err
		}
		b.markLocked(ch, e)
	}
	if refused {
		if l := b.cfg.logger; l != nil {
			l.Warn("pgnotify: bus: channel change refused", "listen", listen, "channels", len(channels), "err", err)
		}
		if !listen {
			// Stays listened and dirty: the next Subscribe or Close
			// tries again.
			for _, ch := range channels {
				delete(b.dirty, ch)
			}
		}
	}
	b.broadcastLocked()
	return err == nil
}

// resync makes conn, which replaces a dead connection, listen on exactly
// the channels the subscriptions want: it asks the server what conn
// listens on (the Manager made it LISTEN the dead one's channels), then
// converges. It reports whether conn is ready. Called by the dispatcher
// with b.syncMu held.
func (b *Bus) resync(conn *pgx.Conn) bool {
	var have []string
	err := b.m.Do(b.ctx, conn, func(c *pgx.Conn) error {
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.roundTrip())
		defer cancel()
		var err error
		have, err = pgnotify.ListeningChannels(ctx, c)
		return err
	})
	if err != nil {
		return false
	}
	b.mu.Lock()
	if b.closed || b.conn != conn {
		b.mu.Unlock()
		return false
	}
	for ch, e := range b.chans {
		e.listened = slices.Contains(have, ch)
		e.inflight = false
		b.markLocked(ch, e)
	}
	for _, ch := range have {
		if b.chans[ch] == nil {
			e := &chanEntry{listened: true}
			b.chans[ch] = e
			b.markLocked(ch, e)
		}
	}
	b.mu.Unlock()
	return b.converge(conn)
}
