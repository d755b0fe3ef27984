package pgnotify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// A DialFunc opens a connection to replace dead, a connection in the
// garbage set. It may read dead.Conn's config (dead.Conn.Config()) to reach
// the same server. The manager makes the new connection listen on
// dead.Channels itself.
type DialFunc func(ctx context.Context, dead Garbage) (*pgx.Conn, error)

// Recover replaces the connections in the garbage set: for each, it dials
// a new one, makes it LISTEN on the dead one's channels, checks them with
// pg_listening_channels(), and adds it. Each success yields a [Recovered]
// event after the channels are listened again and before any batch from
// the new connection, so a consumer can resynchronise from its own data
// without a race: notifications sent while the old connection was dead are
// lost. Failures stay in the garbage set and are returned joined. Garbage
// another Recover is already replacing is skipped.
func (m *Manager) Recover(ctx context.Context, dial DialFunc) error {
	if dial == nil {
		return errors.New("pgnotify: Recover: nil DialFunc")
	}
	gs, err := m.claimGarbage()
	if err != nil {
		return err
	}
	return fanOut(len(gs), func(i int) error {
		err := m.recoverOne(ctx, dial, gs[i], 0)
		if err != nil {
			m.mu.Lock()
			delete(m.recovering, gs[i].Conn)
			m.mu.Unlock()
			m.wakeConsumer()
		}
		return err
	})
}

// claimGarbage marks every garbage entry not already being recovered as
// being recovered, and returns them.
func (m *Manager) claimGarbage() ([]Garbage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	var gs []Garbage
	for _, g := range m.garbage {
		if _, busy := m.recovering[g.Conn]; !busy {
			m.recovering[g.Conn] = struct{}{}
			gs = append(gs, g)
		}
	}
	return gs, nil
}

// recoverOne replaces one dead connection, claimed in m.recovering by the
// caller, or says why not; the caller releases the claim on failure.
func (m *Manager) recoverOne(ctx context.Context, dial DialFunc, g Garbage, attempt int) error {
	m.stats.attempts.Add(1)
	conn, err := m.dialReserved(ctx, dial, g)
	if err == nil {
		err = prepareReplacement(ctx, conn, g.Channels)
		if err != nil {
			conn.Close(context.WithoutCancel(ctx))
			m.unreserve([]*pgx.Conn{conn})
		}
	}
	if err == nil {
		// Logged before adopt makes the Recovered event visible, and
		// outside the manager's lock: a log reader never sees the event
		// first. If adopt still refuses it, the failure is logged too.
		if l := m.cfg.logger; l != nil {
			l.Info("pgnotify: connection recovered", "old_pid", g.Conn.PgConn().PID(), "pid", conn.PgConn().PID())
		}
		err = m.adopt(conn, g, attempt)
	}
	if err != nil {
		m.stats.failures.Add(1)
		return fmt.Errorf("pgnotify: recover connection (pid %d): %w", g.Conn.PgConn().PID(), err)
	}
	return nil
}

// dialReserved dials a replacement for g and reserves it as Add does,
// before anything touches it: a connection that is already a member
// belongs to its waiter, and one an Add in progress has reserved belongs to
// that Add, so neither is the DialFunc's to hand over, nor ours to close.
// The caller releases the reservation: adopt does, or unreserve on failure.
func (m *Manager) dialReserved(ctx context.Context, dial DialFunc, g Garbage) (*pgx.Conn, error) {
	conn, err := dial(ctx, g)
	if err != nil {
		return nil, err
	}
	if conn == nil {
		return nil, errors.New("DialFunc returned a nil connection")
	}
	if err := m.reserve([]*pgx.Conn{conn}); err != nil {
		if errors.Is(err, ErrAlreadyAdded) {
			return nil, fmt.Errorf("DialFunc returned a connection that is a member or being added: %w", ErrAlreadyAdded)
		}
		return nil, err
	}
	if conn.IsClosed() {
		m.unreserve([]*pgx.Conn{conn})
		return nil, errors.New("DialFunc returned a closed connection")
	}
	return conn, nil
}

// prepareReplacement makes conn listen on channels and checks that it does.
func prepareReplacement(ctx context.Context, conn *pgx.Conn, channels []string) error {
	if s := conn.PgConn().TxStatus(); s != 'I' {
		return fmt.Errorf("new connection is in a transaction (status %q)", s)
	}
	// LISTEN fails on a hot standby ("cannot execute LISTEN during
	// recovery"), which surfaces here as the server's error.
	if err := Listen(ctx, conn, channels...); err != nil {
		return err
	}
	have, err := ListeningChannels(ctx, conn)
	if err != nil {
		return err
	}
	for _, c := range channels {
		if !slices.Contains(have, c) {
			return fmt.Errorf("new connection does not listen on %q after LISTEN", c)
		}
	}
	return nil
}

// adopt adds conn, reserved by the caller, in place of the dead g: the
// Recovered event is queued before anything the new member receives. conn
// is closed and unreserved if it is refused.
func (m *Manager) adopt(conn *pgx.Conn, g Garbage, attempt int) error {
	m.mu.Lock()
	var refused error
	switch {
	case m.closed:
		refused = ErrClosed
	case !slices.ContainsFunc(m.garbage, func(x Garbage) bool { return x.Conn == g.Conn }):
		refused = errors.New("the dead connection was taken with TakeGarbage")
	}
	if refused != nil {
		m.mu.Unlock()
		conn.Close(context.Background())
		m.unreserve([]*pgx.Conn{conn})
		return refused
	}
	// From reserved to member in one step, as Add commits: released any
	// later, the reservation could be another Add's by then.
	delete(m.adding, conn)
	delete(m.recovering, g.Conn)
	m.garbage = slices.DeleteFunc(m.garbage, func(x Garbage) bool { return x.Conn == g.Conn })
	w := newMember(m, conn, g.Channels, popBuffered(conn, nil))
	w.adopted, w.attempt = time.Now(), attempt
	m.seq++
	w.seq = m.seq
	m.members[conn] = w
	m.ready.push(entry{ev: &Event{Kind: Recovered, Conn: conn, Replaced: g.Conn}})
	if len(w.pending) > 0 {
		w.queued = true
		m.ready.push(entry{w: w})
	}
	w.start()
	m.mu.Unlock()
	m.stats.recoveries.Add(1)
	m.wakeConsumer()
	return nil
}

// reconnect replaces g, waiting a backoff delay before each attempt, until
// it succeeds, the manager closes, or g leaves the garbage set (taken by
// TakeGarbage). g stays claimed in m.recovering throughout, so Next does not
// see an empty set between attempts.
func (m *Manager) reconnect(g Garbage, attempt int) {
	t := time.NewTimer(backoff(m.cfg.reconnectMin, m.cfg.reconnectMax, attempt))
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-m.ctx.Done():
			return
		}
		err := m.recoverOne(m.ctx, m.cfg.dial, g, attempt)
		if err == nil || m.ctx.Err() != nil {
			return
		}
		if l := m.cfg.logger; l != nil {
			l.Warn("pgnotify: reconnect failed", "attempt", attempt+1, "err", err)
		}
		if !m.stillGarbage(g.Conn) {
			return
		}
		attempt++
		t.Reset(backoff(m.cfg.reconnectMin, m.cfg.reconnectMax, attempt))
	}
}

// stillGarbage reports whether conn is still in the garbage set, and
// releases its claim if it is not.
func (m *Manager) stillGarbage(conn *pgx.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if slices.ContainsFunc(m.garbage, func(g Garbage) bool { return g.Conn == conn }) {
		return true
	}
	delete(m.recovering, conn)
	return false
}
