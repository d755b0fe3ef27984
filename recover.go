package pgnotify

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify/internal/backoff"
)

// A DialFunc opens a connection to replace dead, a connection in the
// garbage set. The manager makes the new connection listen on
// dead.Channels itself, and checks that it hears its own notifications.
//
// [Redial] is a DialFunc that reaches dead's server again with dead's
// config. To write one from dead.Conn.Config() yourself, set the copy's
// OnNotification to nil before connecting: pgx put dead's own notification
// buffer there when dead connected, so a connection dialled with it
// unchanged would hand every notification to the dead connection and none
// to the manager ([Manager.Recover] refuses such a connection).
//
// The connection returned becomes the manager's; one that is already a
// member, or that an Add in progress holds, is refused with
// [ErrAlreadyAdded] and left untouched.
type DialFunc func(ctx context.Context, dead Garbage) (*pgx.Conn, error)

// Redial is a [DialFunc] that connects to the server dead.Conn was
// connected to, with a copy of dead.Conn's config (every host and port of
// a multi-host connection string with its fallbacks, database, user, TLS,
// runtime parameters, and callbacks such as target_session_attrs' check)
// whose OnNotification is reset, so the new connection buffers its own
// notifications as pgx does by default. With several hosts it tries them
// in order, as pgx's connect does: with target_session_attrs=read-write it
// follows a promoted standby; without it, a dial that lands on a standby
// is a failed attempt ([ErrStandby]). Use it with [WithReconnect] or
// [Manager.Recover].
func Redial(ctx context.Context, dead Garbage) (*pgx.Conn, error) {
	if dead.Conn == nil {
		return nil, errNoGarbageConn
	}
	cfg := dead.Conn.Config()
	cfg.OnNotification = nil
	return pgx.ConnectConfig(ctx, cfg)
}

// Recover replaces the connections in the garbage set: for each, it dials
// a new one, makes it LISTEN on the dead one's channels, checks them with
// pg_listening_channels() and checks that it hears a NOTIFY of its own (on
// a private channel, UNLISTENed after), and adds it. Each success yields a [Recovered]
// event after the channels are listened again and before any batch from
// the new connection, so a consumer can resynchronise from its own data
// without a race: notifications sent while the old connection was dead are
// lost. Failures stay in the garbage set and are returned joined (and
// logged, see [WithLogger]); a replacement that fails a check is closed.
// Garbage another Recover is already replacing is skipped.
//
// Recover returns by ctx's end, and [Manager.Close] ends it too, even if
// dial ignores its context: such a dial finishes in the background, and a
// connection it makes then is closed, not added.
func (m *Manager) Recover(ctx context.Context, dial DialFunc) error {
	if err := m.checkOpen(); err != nil {
		return err
	}
	if dial == nil {
		return errNilDial
	}
	gs, err := m.claimGarbage()
	if err != nil {
		return err
	}
	defer m.wg.Done()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(m.ctx, cancel)()
	return fanOut(len(gs), func(i int) error {
		err := m.recoverOne(ctx, dial, gs[i], nil, 0)
		if err != nil {
			m.mu.Lock()
			m.ms.release(gs[i].Conn)
			m.mu.Unlock()
			m.wakeConsumer()
		}
		return err
	})
}

// claimGarbage marks every garbage entry not already being recovered as
// being recovered, and returns them. It counts the Recover in m.wg, so
// that Close waits for it; the caller calls m.wg.Done when it returns.
func (m *Manager) claimGarbage() ([]Garbage, error) {
	if err := m.made(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closedLocked() {
		return nil, ErrClosed
	}
	m.wg.Add(1)
	var gs []Garbage
	for _, g := range m.ms.garbage {
		if m.ms.claim(g.Conn) {
			gs = append(gs, g)
		}
	}
	return gs, nil
}

// recoverOne replaces one dead connection, claimed in m.recovering by the
// caller, or says why not; the caller releases the claim on failure.
// bo is the backoff of the outage, which the new member carries on (nil
// for Recover, which waits no backoff); try counts the
// automatic reconnect's attempts in this outage from 1, and is 0 for
// Recover.
func (m *Manager) recoverOne(ctx context.Context, dial DialFunc, g Garbage, bo *backoff.Backoff, try int) error {
	m.stats.attempts.Add(1)
	conn, err := m.dialReserved(ctx, dial, g)
	var pending []*Notification
	if err == nil {
		pending, err = prepareReplacement(ctx, conn, g.Channels)
		if err != nil {
			conn.Close(context.WithoutCancel(ctx))
			m.unreserve([]*pgx.Conn{conn})
		}
	}
	if err == nil {
		// Logged before adopt makes the Recovered event visible, and
		// outside the manager's lock: a log reader never sees the event
		// first. If adopt still refuses it, the failure is logged too.
		m.logRecovery(g, conn, try, nil)
		err = m.adopt(conn, g, bo, pending)
	}
	if err != nil {
		m.stats.failures.Add(1)
		err = &connError{"recover", fmt.Sprintf("connection (pid %d)", g.Conn.PgConn().PID()), err}
		if m.ctx.Err() == nil {
			m.logRecovery(g, nil, try, err)
		}
		return err
	}
	return nil
}

// logRecovery logs a recovery (conn replaced g) or a failed attempt (err),
// when a logger was given.
func (m *Manager) logRecovery(g Garbage, conn *pgx.Conn, try int, err error) {
	l := m.cfg.logger
	if l == nil {
		return
	}
	args := connAttrs(g.Conn, "old_pid")
	if try > 0 {
		args = append(args, "attempt", try)
	}
	switch {
	case err != nil && try > 0:
		l.Warn("pgnotify: reconnect failed", append(args, "err", err)...)
	case err != nil:
		l.Warn("pgnotify: recover failed", append(args, "err", err)...)
	default:
		l.Info("pgnotify: connection recovered", append(args, "pid", conn.PgConn().PID())...)
	}
}

// connAttrs names conn for a log line: the server it was dialled to (host,
// port and database from its config: with several hosts, the first) and
// its backend PID under pidKey.
func connAttrs(conn *pgx.Conn, pidKey string) []any {
	cfg := conn.Config()
	return []any{"host", cfg.Host, "port", cfg.Port, "database", cfg.Database, pidKey, conn.PgConn().PID()}
}

// dialReserved dials a replacement for g and reserves it as Add does,
// before anything touches it: a connection that is already a member
// belongs to its waiter, and one an Add in progress has reserved belongs to
// that Add, so neither is the DialFunc's to hand over, nor ours to close.
// The caller releases the reservation: adopt does, or unreserve on failure.
func (m *Manager) dialReserved(ctx context.Context, dial DialFunc, g Garbage) (*pgx.Conn, error) {
	conn, err := m.dialBy(ctx, dial, g)
	if err != nil {
		return nil, err
	}
	if conn == nil {
		return nil, errDialedNil
	}
	if err := m.reserve([]*pgx.Conn{conn}); err != nil {
		if errors.Is(err, ErrAlreadyAdded) {
			return nil, fmt.Errorf("DialFunc returned a connection that is a member or being added: %w", ErrAlreadyAdded)
		}
		// Closed meanwhile: the connection is ours, and nobody will add it.
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	if conn.IsClosed() {
		m.unreserve([]*pgx.Conn{conn})
		return nil, errDialedClosed
	}
	return conn, nil
}

// dialBy returns what dial makes for g, or ctx's error once ctx ends: a
// DialFunc may ignore its context, and neither Recover nor Close may hang
// on it. An abandoned dial finishes in the background, counted in m.wg,
// and a connection it makes then is closed. The caller must be counted in
// m.wg itself (a Recover or an automatic reconnect), so that this Add never
// races with Close's Wait.
func (m *Manager) dialBy(ctx context.Context, dial DialFunc, g Garbage) (*pgx.Conn, error) {
	type dialled struct {
		conn *pgx.Conn
		err  error
	}
	out := make(chan dialled, 1)
	// claimed decides, once, who has the result: this call, or the
	// goroutine that closes it because this call returned already.
	var claimed atomic.Bool
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		conn, err := dial(ctx, g)
		if claimed.CompareAndSwap(false, true) {
			out <- dialled{conn, err}
		} else if conn != nil {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn.Close(cctx)
			cancel()
		}
	}()
	select {
	case d := <-out:
		return d.conn, d.err
	case <-ctx.Done():
		if claimed.CompareAndSwap(false, true) {
			return nil, ctx.Err()
		}
		d := <-out
		return d.conn, d.err
	}
}

// prepareReplacement makes conn listen on channels, checks that it does
// and that it hears its own notifications, and returns the notifications
// it received meanwhile, in order.
func prepareReplacement(ctx context.Context, conn *pgx.Conn, channels []string) ([]*Notification, error) {
	if s := conn.PgConn().TxStatus(); s != 'I' {
		return nil, fmt.Errorf("new connection is in a transaction (status %q)", s)
	}
	// LISTEN fails on a hot standby ("cannot execute LISTEN during
	// recovery"): an error matching ErrStandby, here or in hearsItself
	// when there are no channels, so a reconnect that lands on a standby
	// is a failed attempt, never a member that cannot hear.
	if err := Listen(ctx, conn, channels...); err != nil {
		return nil, err
	}
	pending, err := hearsItself(ctx, conn)
	if err != nil {
		return nil, err
	}
	have, err := ListeningChannels(ctx, conn)
	if err != nil {
		return nil, err
	}
	for _, c := range channels {
		if !slices.Contains(have, c) {
			return nil, fmt.Errorf("new connection does not listen on %q after LISTEN", c)
		}
	}
	return pending, nil
}

// hearsItself checks that conn receives its own notifications in its own
// buffer: it LISTENs a private channel and NOTIFYs it in one round trip
// (the server delivers a session's own notification before it reports
// ready), then UNLISTENs it in another. A connection dialled from another
// one's Config() fails: pgx hands its notifications to the other
// connection. It returns the other notifications conn received meanwhile,
// in order. Add does not do this: two more round trips, and a NOTIFY wakes
// every listening backend of the database (PostgreSQL <= 18), while a
// member's waiter finds a deaf connection for free when pgx hands it no
// notification for one that arrived.
func hearsItself(ctx context.Context, conn *pgx.Conn) ([]*Notification, error) {
	pid := conn.PgConn().PID()
	probe := fmt.Sprintf("pgnotify.probe.%d.%x", pid, rand.Uint64())
	q := quoteIdent(probe)
	var kept []*Notification
	heard := false
	take := func() {
		for _, n := range popBuffered(conn, nil) {
			// The probe's name is unique; its PID is the server's, which
			// behind a pooler is not the key pgx was given (conn's PID).
			if n.Channel == probe {
				heard = true
				continue
			}
			kept = append(kept, n)
		}
	}
	if _, err := conn.PgConn().Exec(ctx, "LISTEN "+q+"; NOTIFY "+q).ReadAll(); err != nil {
		if err := asStandby("", err); errors.Is(err, ErrStandby) {
			return nil, err
		}
		return nil, fmt.Errorf("pgnotify: notify itself: %w", err)
	}
	take()
	if err := Unlisten(ctx, conn, probe); err != nil {
		return nil, err
	}
	take() // in case the server had not sent it before ReadyForQuery
	if !heard {
		return nil, fmt.Errorf("new connection did not hear its own NOTIFY: %w", errNotHeard)
	}
	return kept, nil
}

// adopt adds conn, reserved by the caller, in place of the dead g: the
// Recovered event is queued before anything the new member receives,
// pending (what it received while being prepared) first. conn is closed
// and unreserved if it is refused. The new member carries bo, up from now.
func (m *Manager) adopt(conn *pgx.Conn, g Garbage, bo *backoff.Backoff, pending []*Notification) error {
	m.mu.Lock()
	var refused error
	switch {
	case m.closedLocked():
		refused = ErrClosed
	case !m.ms.replace(g.Conn):
		refused = errGarbageTaken
	}
	if refused != nil {
		m.mu.Unlock()
		conn.Close(context.Background())
		m.unreserve([]*pgx.Conn{conn})
		return refused
	}
	mb := newMember(m, conn, g.Channels, popBuffered(conn, pending))
	if bo != nil {
		bo.Up()
		mb.bo = bo
	}
	m.ready.push(entry{ev: &Event{Kind: Recovered, Conn: conn, Replaced: g.Conn}})
	m.admitLocked(mb)
	m.mu.Unlock()
	m.stats.recoveries.Add(1)
	m.wakeConsumer()
	return nil
}

// stillGarbage reports whether conn is still in the garbage set, and
// releases its claim if it is not.
func (m *Manager) stillGarbage(conn *pgx.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.ms.inGarbage(conn); ok {
		return true
	}
	m.ms.release(conn)
	return false
}
