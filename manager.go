package pgnotify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// A Manager receives notifications on a changing set of connections, to one
// database or to many servers, and yields them as a stream of events through
// [Manager.Next].
//
// The consumer (one goroutine at a time) calls Next, [Manager.Events] or
// [Manager.Drain]. Every other method is safe from any goroutine at any
// time, including while Next is blocked.
//
// A connection added to a Manager belongs to it until [Manager.Remove]
// returns or [Manager.TakeGarbage] hands it back: use it only through
// [Manager.Do], [Manager.Listen] and [Manager.Unlisten].
type Manager struct {
	cfg     config       // read-only after NewManager
	timeout atomic.Int64 // time.Duration; NoTimeout, 0 or > 0

	signal chan struct{} // cap 1: the ready queue or the set changed
	// loans is unbuffered: a waiter's offer (see loan) is taken only by a
	// consumer blocked in Next at that moment.
	loans chan *loan
	stats counters
	test  testSignals // set only by tests, before the first Add

	// ctx is cancelled by Close, under mu: it is what "closed" means (see
	// membership.go). Automatic reconnects dial under it.
	ctx    context.Context
	cancel context.CancelFunc

	// wg counts drain passes and automatic reconnects, so Close returns
	// with none left. Waiters are not counted: Close waits on each one's
	// exited, except for one lent to a Do.
	wg sync.WaitGroup

	// consuming is set while a goroutine is in Next or Drain, so a second
	// one is refused instead of hanging.
	consuming atomic.Bool

	// idle is the consumer's.
	idle idleTimer

	mu     sync.Mutex        // guards the fields below, and each member's seq
	ms     membership        // where each connection stands: see membership.go
	deaths map[string]uint64 // Dead events yielded, by causeClass
	ready  fifo
	popped [1]Event   // popLocked's scratch, so that a batch costs no allocation
	pass   *drainPass // the drain pass in progress, if any
}

// NewManager returns an empty manager configured by opts.
func NewManager(opts ...Option) *Manager {
	m := &Manager{
		cfg:    newConfig(opts),
		signal: make(chan struct{}, 1),
		loans:  make(chan *loan),
		ms:     newMembership(),
		deaths: make(map[string]uint64),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.timeout.Store(int64(m.cfg.timeout))
	return m
}

// SetTimeout sets how long [Manager.Next] waits: [NoTimeout] (the default)
// blocks until an event, ctx ends or the set is empty; d > 0 yields an Idle
// event when nothing happened within d of the call; 0 makes Next a drain,
// one pass at a time (see [Manager.Drain]). Any negative d means NoTimeout.
// A Next already blocked keeps the timeout it started with.
func (m *Manager) SetTimeout(d time.Duration) { m.timeout.Store(int64(normTimeout(d))) }

// Timeout returns the timeout set by [Manager.SetTimeout] or [WithTimeout].
func (m *Manager) Timeout() time.Duration { return time.Duration(m.timeout.Load()) }

// Add hands conns to the manager. It is all-or-nothing: a nil, closed or
// duplicate connection ([ErrAlreadyAdded]), or one inside a transaction
// (it could never receive a notification), fails the call and adds none.
//
// A connection to a hot standby fails with an error matching [ErrStandby]
// (it could never hear a notification), and a listening one whose LISTEN
// state does not persist from one transaction to the next (a
// transaction-mode pooler) with one matching [ErrNoSession].
//
// Add learns each connection's channels with one round trip (two behind a
// pooler, see [ErrNoSession]) and keeps any
// notifications pgx had already buffered on it, so none is lost. If ctx
// ends while those round trips are on the wire they are let finish (within
// the health-check timeout) rather than cancelled, since pgx closes a
// connection whose query is cancelled; Add then returns ctx's error and adds
// none, and the connections are still the caller's and usable.
//
// A connection must keep pgx's default notification handling, which
// buffers them in the connection. A config from another connection's
// Config() carries that connection's buffer in OnNotification: set it to
// nil in the copy before connecting (or redial with [Redial]). A member
// whose notification goes to an OnNotification instead dies (a [Dead]
// event says why) when its waiter reads one; one that a round trip of the
// manager's reads first (a drain pass, Do, Listen, a health ping) is lost
// unseen.
func (m *Manager) Add(ctx context.Context, conns ...*pgx.Conn) error {
	if len(conns) == 0 {
		return m.checkOpen()
	}
	if err := m.reserve(conns); err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			m.unreserve(conns)
		}
	}()
	// Reserved: no other Add can take them, and none is a member, so they
	// may be touched here.
	for i, c := range conns {
		if c.IsClosed() {
			return &connError{"add", nth(i), errAddClosed}
		}
		if s := c.PgConn().TxStatus(); s != 'I' {
			return &connError{"add", nth(i), fmt.Errorf("in a transaction (status %q)", s)}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	channels := make([][]string, len(conns))
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.roundTripTimeout())
	defer cancel()
	err := fanOut(len(conns), func(i int) error {
		chs, err := checkAdd(qctx, conns[i])
		if err != nil {
			return &connError{"add", nth(i), err}
		}
		channels[i] = chs
		return nil
	})
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	mbs := make([]*member, len(conns))
	for i, c := range conns {
		mbs[i] = newMember(m, c, channels[i], popBuffered(c, nil))
	}
	m.mu.Lock()
	if m.closedLocked() {
		m.mu.Unlock()
		return ErrClosed
	}
	committed = true
	for _, mb := range mbs {
		m.ms.carryOver(mb)
		m.admitLocked(mb)
	}
	m.mu.Unlock()
	m.wakeConsumer()
	return nil
}

// reserve checks that conns may be added and claims them, so that two
// goroutines adding the same connection cannot both win. It touches no
// connection: a member belongs to its waiter.
func (m *Manager) reserve(conns []*pgx.Conn) error {
	if err := m.made(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closedLocked() {
		return ErrClosed
	}
	return m.ms.reserve(conns, "add")
}

// admitLocked makes mb, reserved, a member and starts its waiter: from
// reserved to member in one step, for Add and for a recovery (released any
// later, the reservation could be another Add's by then). Must be called
// with m.mu held.
func (m *Manager) admitLocked(mb *member) {
	m.ms.admit(mb)
	if len(mb.pending) > 0 {
		mb.queued = true
		m.ready.push(entry{w: mb})
	}
	mb.start()
}

// membersLocked returns the members, with the removed ones that still have
// notifications to yield when removed is true. Must be called with m.mu
// held.
func (m *Manager) membersLocked(removed bool) []*member { return m.ms.list(removed) }

func (m *Manager) unreserve(conns []*pgx.Conn) {
	m.mu.Lock()
	m.ms.unreserve(conns)
	m.mu.Unlock()
}

// lookup returns the live member for conn, or why there is none: ErrClosed,
// ErrNotManaged (also for one being removed), an error wrapping the cause of
// its death, or errLent when the caller is the Do function conn is lent to.
func (m *Manager) lookup(conn *pgx.Conn) (*member, error) {
	if err := m.made(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.closedLocked() {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	if conn == nil {
		m.mu.Unlock()
		return nil, errNilConn
	}
	mb := m.ms.members[conn]
	if mb == nil {
		defer m.mu.Unlock()
		if g, ok := m.ms.inGarbage(conn); ok {
			return nil, &deadError{cause: g.Err}
		}
		return nil, ErrNotManaged
	}
	m.mu.Unlock()
	mb.mu.Lock()
	b := mb.borrower
	err := mb.unusableLocked()
	mb.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if b != 0 && b == goid() {
		return nil, errLent
	}
	return mb, nil
}

// Remove takes conns out of the set and gives them back to the caller,
// open and still listening. Notifications they received before Remove
// returns are still yielded by Next, as Batch events naming them.
//
// Each connection must be a live member: otherwise Remove fails, removes
// none, and returns [ErrNotManaged] or an error wrapping the cause of
// death. If ctx ends before the waiters have let go, Remove returns ctx's
// error and the connections it could not take back in time are closed when
// their waiters stop.
func (m *Manager) Remove(ctx context.Context, conns ...*pgx.Conn) error {
	if len(conns) == 0 {
		return m.checkOpen()
	}
	mbs := make([]*member, len(conns))
	for i, c := range conns {
		mb, err := m.lookup(c)
		if err != nil {
			return &connError{"remove", nth(i), err}
		}
		mbs[i] = mb
	}
	for _, mb := range mbs {
		mb.requestStop()
	}
	for _, mb := range mbs {
		select {
		case <-mb.exited:
		case <-ctx.Done():
			gaveUp := false
			for _, mb := range mbs {
				mb.mu.Lock()
				gaveUp = mb.giveUpLocked() || gaveUp
				mb.mu.Unlock()
			}
			if gaveUp {
				return fmt.Errorf("pgnotify: remove: %w", ctx.Err())
			}
			return nil
		}
	}
	// A member that died after the check above is not handed back: its
	// Dead event follows.
	var errs []error
	for i, mb := range mbs {
		mb.mu.Lock()
		if mb.state == stateDead {
			errs = append(errs, &connError{"remove", nth(i), &deadError{cause: mb.cause}})
		}
		mb.mu.Unlock()
	}
	return errors.Join(errs...)
}

// forget drops a removed member from the set, keeping it in m.removed while
// it has notifications to yield.
func (m *Manager) forget(mb *member) {
	m.mu.Lock()
	m.ms.forget(mb)
	m.mu.Unlock()
	m.wakeConsumer()
}

// Conns returns the live members, in the order they were added.
func (m *Manager) Conns() []*pgx.Conn {
	m.mu.Lock()
	mbs := m.membersLocked(false)
	m.mu.Unlock()
	slices.SortFunc(mbs, func(a, b *member) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]*pgx.Conn, 0, len(mbs))
	for _, mb := range mbs {
		mb.mu.Lock()
		if mb.liveLocked() {
			out = append(out, mb.conn)
		}
		mb.mu.Unlock()
	}
	return out
}

// Garbage returns a snapshot of the dead connections the manager holds.
// A connection moves there when Next yields its Dead event.
func (m *Manager) Garbage() []Garbage {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.ms.garbage)
}

// TakeGarbage removes the dead connections from the manager and returns
// them: the caller owns them from then on (they are closed; their PID,
// cause and channels remain for inspection).
func (m *Manager) TakeGarbage() []Garbage {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.ms.takeGarbage()
	m.wakeConsumer()
	return g
}

// Do lends conn, a live member, to fn in the calling goroutine: its waiter
// stops reading until fn returns, and notifications that arrive meanwhile
// are kept and yielded. As everywhere in pgx, a query whose context is
// cancelled closes the connection; if fn leaves conn closed, Do returns
// fn's error and a Dead event follows. Notifications fn's queries received
// are pending when Do returns, ahead of anything received later.
//
// fn must leave conn outside a transaction: a session in a transaction
// receives no notification. If it does not, Do rolls the transaction back
// and returns an error saying so (joined with fn's own, if any); if the
// ROLLBACK fails, the connection is closed and a Dead event follows.
//
// Inside fn, use the connection fn was given: Do, Listen, Unlisten,
// UnlistenAll and Remove for conn from fn's goroutine return an error at
// once rather than wait for fn. Close from inside fn returns without
// waiting for fn; conn is closed when fn returns, before Do returns.
//
// [Manager.Close] called meanwhile from another goroutine cancels the query
// fn is running (a cancel request, as pgx sends for a cancelled context; the
// connection stays usable for fn) and waits for fn to return. Do returns
// only once the manager has let go of conn: when the member was closed,
// removed or died during the Do, its waiter is done with conn by then.
//
// LISTEN and UNLISTEN run inside fn are not tracked for recovery: change
// channels with [Manager.Listen] and [Manager.Unlisten].
//
// Do waits for the waiter to let go of conn until ctx ends. It returns
// [ErrNotManaged] for a connection that is not a member, an error matching
// [ErrDead] and wrapping the cause for one that died, and [ErrClosed] after
// Close (also for a Do still waiting when Close is called).
func (m *Manager) Do(ctx context.Context, conn *pgx.Conn, fn func(*pgx.Conn) error) error {
	mb, err := m.lookup(conn)
	if err != nil {
		return err
	}
	if fn == nil {
		return errNilFunc
	}
	return mb.lend(ctx, fn)
}

// lend is Do on a member already looked up.
func (mb *member) lend(ctx context.Context, fn func(*pgx.Conn) error) (err error) {
	r := newRequest(reqHandover)
	if err := mb.submit(r); err != nil {
		return err
	}
	select {
	case err := <-r.done:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		if r.withdraw() {
			return ctx.Err()
		}
		if err := <-r.done; err == nil {
			mb.giveBack(r, nil) // taken meanwhile: hand the connection straight back
		}
		return ctx.Err()
	}
	// A request this goroutine makes on conn from inside fn would wait
	// for fn to return: lookup refuses it.
	mb.mu.Lock()
	mb.borrower = goid()
	mb.mu.Unlock()
	defer func() { err = mb.giveBack(r, err) }()
	return fn(mb.conn)
}

// giveBack hands the connection lent for r back to the waiter with fnErr,
// the function's error, and returns what Do reports. It returns once what
// the function received is pending (or the Dead event is queued), so the
// caller's next Next or Drain sees it; and, when the member is no longer
// live (Close, Remove, a death), once its waiter has let go of the
// connection, so that the caller may touch it after Do with no race.
func (mb *member) giveBack(r *request, fnErr error) error {
	mb.mu.Lock()
	mb.borrower = 0
	mb.mu.Unlock()
	r.released <- fnErr
	err := fnErr
	switch afterErr := <-r.done; {
	case afterErr == nil:
	case err == nil:
		err = afterErr
	default:
		err = errors.Join(err, afterErr)
	}
	mb.mu.Lock()
	live := mb.state == stateLive
	mb.mu.Unlock()
	if !live {
		<-mb.exited
	}
	return err
}

// Listen makes conn, a member, listen on channels, and records them for
// recovery. The names are validated first (see [ValidateChannel]); the
// LISTEN is one round trip and all-or-nothing. ctx bounds the wait for the
// waiter; once the LISTEN is on the wire it runs to completion (within the
// health-check timeout) so that cancelling never closes the connection.
func (m *Manager) Listen(ctx context.Context, conn *pgx.Conn, channels ...string) error {
	return m.changeChannels(ctx, conn, channels, true)
}

// Unlisten makes conn, a member, stop listening on channels, and records
// that for recovery. It behaves like [Manager.Listen].
func (m *Manager) Unlisten(ctx context.Context, conn *pgx.Conn, channels ...string) error {
	return m.changeChannels(ctx, conn, channels, false)
}

// UnlistenAll makes conn, a member, stop listening on every channel (UNLISTEN
// *), and records that for recovery: a recovered connection listens on
// nothing until [Manager.Listen]. It behaves like [Manager.Listen]. An
// UNLISTEN * run inside [Manager.Do] is not tracked; use this instead.
func (m *Manager) UnlistenAll(ctx context.Context, conn *pgx.Conn) error {
	return m.channelCommand(ctx, conn, func(qctx context.Context, c *pgx.Conn, tracked map[string]struct{}) error {
		if err := UnlistenAll(qctx, c); err != nil {
			return err
		}
		clear(tracked)
		return nil
	})
}

func (m *Manager) changeChannels(ctx context.Context, conn *pgx.Conn, channels []string, listen bool) error {
	if err := m.checkOpen(); err != nil {
		return err
	}
	for _, c := range channels {
		if err := ValidateChannel(c); err != nil {
			return err
		}
	}
	if len(channels) == 0 {
		return nil
	}
	return m.channelCommand(ctx, conn, func(qctx context.Context, c *pgx.Conn, tracked map[string]struct{}) error {
		var err error
		if listen {
			err = Listen(qctx, c, channels...)
		} else {
			err = Unlisten(qctx, c, channels...)
		}
		if err != nil {
			return err
		}
		for _, ch := range channels {
			if listen {
				tracked[ch] = struct{}{}
			} else {
				delete(tracked, ch)
			}
		}
		return nil
	})
}

// channelCommand runs cmd on conn, a member, as a Do would, under a context
// of its own: once on the wire it runs to completion (within the
// round-trip timeout), so cancelling ctx never closes the connection. cmd
// updates the tracked channel set, under the member's lock, on success.
func (m *Manager) channelCommand(ctx context.Context, conn *pgx.Conn, cmd func(context.Context, *pgx.Conn, map[string]struct{}) error) error {
	mb, err := m.lookup(conn)
	if err != nil {
		return err
	}
	return mb.lend(ctx, func(c *pgx.Conn) error {
		qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.roundTripTimeout())
		defer cancel()
		mb.mu.Lock()
		tracked := maps.Clone(mb.channels)
		mb.mu.Unlock()
		if err := cmd(qctx, c, tracked); err != nil {
			return err
		}
		mb.mu.Lock()
		mb.channels = tracked
		mb.mu.Unlock()
		return nil
	})
}

// buryLocked moves a dead member, all of whose notifications were taken, to
// the garbage set and returns its Dead event. Must be called with m.mu held.
func (m *Manager) buryLocked(mb *member) Event {
	mb.mu.Lock()
	cause := mb.cause
	mb.mu.Unlock()
	g := Garbage{Conn: mb.conn, Err: cause, Channels: mb.channelList()}
	m.ms.bury(mb, g)
	m.deaths[causeClass(cause)]++
	if m.cfg.dial != nil && !m.closedLocked() {
		// Recovery starts only now, so its Recovered event cannot overtake
		// the Dead one.
		m.ms.claim(g.Conn)
		bo := mb.bo
		if bo == nil {
			bo = m.newBackoff()
		}
		bo.Down() // the waiter did at its death; a second Down is a no-op
		m.goReconnect(g, bo)
	}
	return Event{Kind: Dead, Conn: mb.conn, Err: cause}
}

// emptyLocked reports whether the set has nothing left to yield. Must be
// called with m.mu held.
func (m *Manager) emptyLocked() bool {
	return m.ms.empty() && m.ready.len() == 0
}

// Next returns the next event: a [Batch] of notifications from one
// connection, [Idle] when nothing happened within the timeout, a [Dead]
// connection or a [Recovered] one. When several connections have batches,
// they come in the order they became ready.
//
// Next returns io.EOF (unwrapped) when the set is empty and nothing is
// pending, and at the end of each drain pass when the timeout is 0: with a
// timeout other than 0, io.EOF means only that no connection is left (see
// [ErrNoConns]). It returns [ErrClosed] after Close; ctx's error when ctx
// ends first. Call it from one goroutine at a time: a Next, Events or Drain
// called while another is running returns an error at once.
//
// While it waits, Next may decode a ready member's burst itself, on the
// consumer's core (see loan.go): that read is bounded by the pending bounds,
// and a batch it has read is returned even if ctx ended meanwhile, since
// those notifications are already off the wire.
func (m *Manager) Next(ctx context.Context) (Event, error) {
	ev, err := m.next(ctx)
	if err == ErrNoConns {
		return ev, io.EOF
	}
	return ev, err
}

// next is Next, returning ErrNoConns rather than io.EOF when the set is
// empty outside a drain pass, for Events.
func (m *Manager) next(ctx context.Context) (Event, error) {
	if err := m.made(); err != nil {
		return Event{}, err
	}
	if !m.consuming.CompareAndSwap(false, true) {
		return Event{}, errConcurrentNext
	}
	defer m.consuming.Store(false)
	d := m.Timeout()
	if d == 0 {
		return m.nextInPass(ctx)
	}
	var idle <-chan time.Time
	defer m.idle.stop()
	for {
		m.mu.Lock()
		if m.closedLocked() {
			m.mu.Unlock()
			return Event{}, ErrClosed
		}
		if ev, ok := m.leftoverLocked(); ok {
			m.mu.Unlock()
			return ev, nil
		}
		if ev, ok := m.popLocked(); ok {
			m.mu.Unlock()
			return ev, nil
		}
		if m.emptyLocked() {
			m.mu.Unlock()
			return Event{}, ErrNoConns
		}
		m.mu.Unlock()
		if d > 0 && idle == nil {
			idle = m.idle.start(d)
		}
		select {
		case <-m.signal:
		case l := <-m.loans:
			// A waiter lends us its read: decode its burst here, where it
			// is consumed, and take it at the top of the loop.
			m.test.loaned.signal(l.decode())
		case <-m.ctx.Done(): // closed
		case <-ctx.Done():
			return Event{}, ctx.Err()
		case <-idle:
			m.mu.Lock()
			ev, ok := m.popLocked()
			m.mu.Unlock()
			if ok {
				return ev, nil
			}
			m.stats.idle.Add(1)
			return Event{Kind: Idle}, nil
		}
	}
}

// Events ranges over [Manager.Next]. It is a single-use stream, consumed by
// one goroutine; with a zero timeout it covers one drain pass and stops
// quietly at its end (io.EOF). Any other error comes once, last: also the
// end of a stream the caller did not ask to end, when the set is empty
// (every member removed, or dead with nothing to replace it), which yields
// [ErrNoConns]; it matches io.EOF with [errors.Is].
func (m *Manager) Events(ctx context.Context) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		for {
			ev, err := m.next(ctx)
			if err == io.EOF {
				return
			}
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

// Close stops every waiter and closes every connection in the set and in
// the garbage set; a connection a Remove is taking back stays the caller's.
// After Close every method returns [ErrClosed], and a request still waiting
// for its member (a Do, a Listen) returns ErrClosed too. Calling Close
// again returns nil.
//
// A member lent to a [Manager.Do] function is not closed under it: Close
// cancels the query the function runs (a cancel request, sent again while
// the function holds on, since one that reaches the server between two
// queries cancels nothing), and its waiter closes the connection once the
// function returns; that Do returns after. Close waits for all of this, for
// the waiters to stop and for automatic reconnects and [Manager.Recover]
// calls in progress to give up, until ctx ends, and returns nil only when
// every member is closed. If ctx ends first, Close returns ctx's error: the
// sockets of the members still stopping are closed under their waiters
// (never under a Do function), a lent member is closed when its function
// returns, and a dial that ignores its context finishes in the background:
// a connection it then makes is closed, not added.
//
// Close may be called from inside a Do function: it does not wait for that
// function, whose member is closed when it returns, before its Do returns.
func (m *Manager) Close(ctx context.Context) error {
	if err := m.made(); err != nil {
		return err
	}
	m.mu.Lock()
	if m.closedLocked() {
		m.mu.Unlock()
		return nil
	}
	m.cancel()
	mbs := m.ms.list(false)
	garbage := m.ms.garbage
	m.mu.Unlock()

	stopping, lent, ours := stopAllForClose(mbs)
	var err error
	if !m.exitedBy(ctx, stopping, lent) {
		err = ctx.Err()
		// Out of time: a stopping waiter is in a round trip of its own
		// timeout. Closing its socket ends that at once.
		for _, mb := range ours {
			mb.netConn.Close()
		}
		for _, mb := range stopping {
			if !slices.Contains(lent, mb) {
				<-mb.exited
			}
		}
	} else {
		select {
		case <-waitDone(&m.wg):
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, g := range garbage {
		g.Conn.Close(cctx)
	}
	return err
}

// stopAllForClose stops every member of mbs for Close and sorts them:
// stopping, those Close waits for; lent, those a Do function holds, whose
// query it cuts; ours, those whose socket it may close when out of time
// (not one a Remove is taking back, nor a lent one). A member lent to
// Close's own caller is in none: waiting for its function would never end.
func stopAllForClose(mbs []*member) (stopping, lent, ours []*member) {
	self := goid()
	for _, mb := range mbs {
		isLent, mine, borrower := mb.stopForClose()
		switch {
		case isLent && borrower == self:
		case isLent:
			stopping = append(stopping, mb)
			lent = append(lent, mb)
		default:
			stopping = append(stopping, mb)
			if mine {
				ours = append(ours, mb)
			}
		}
	}
	return stopping, lent, ours
}

// exitedBy waits for the waiters of mbs to return, until ctx ends, and
// reports whether they all did. Meanwhile it cuts the query of each member
// of lent whose waiter has not returned, at once and then again every
// cutAgain (doubling up to a second).
func (m *Manager) exitedBy(ctx context.Context, mbs, lent []*member) bool {
	var cutC <-chan time.Time
	if len(lent) > 0 {
		cut := time.NewTimer(0)
		defer cut.Stop()
		cutC = cut.C
	}
	again := cutAgain
	for _, mb := range mbs {
		for waiting := true; waiting; {
			select {
			case <-mb.exited:
				waiting = false
			case <-ctx.Done():
				return false
			case <-cutC:
				for _, l := range lent {
					select {
					case <-l.exited:
					default:
						l.cutQuery(ctx)
					}
				}
				cutC = time.After(again)
				again = min(2*again, time.Second)
			}
		}
	}
	return true
}

// cutAgain is how long Close waits for a Do function before it sends its
// query another cancel request.
const cutAgain = 50 * time.Millisecond

// cutQuery asks the server to cancel the query a Do function is running on
// mb's connection. The cancel request travels on a connection of its own
// and reads only what pgconn set at connect, so it is safe while the
// function owns mb.conn, where closing the socket under it is not.
func (mb *member) cutQuery(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, mb.cfg.roundTripTimeout())
	defer cancel()
	if err := mb.conn.PgConn().CancelRequest(ctx); err != nil && ctx.Err() == nil {
		if l := mb.cfg.logger; l != nil {
			l.Warn("pgnotify: close: cancelling the query of a Do function failed", append(connAttrs(mb.conn, "pid"), "err", err)...)
		}
	}
}

// waiterDone is told that mb's waiter returned (see owner).
func (m *Manager) waiterDone(mb *member, cause error) {
	if cause != nil {
		m.logDeath(mb, cause)
	} else {
		m.forget(mb)
	}
}

// logDeath reports a death when a logger was given.
func (m *Manager) logDeath(mb *member, cause error) {
	if l := m.cfg.logger; l != nil {
		l.Warn("pgnotify: connection died", append(connAttrs(mb.conn, "pid"), "err", cause)...)
	}
}
