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

	signal   chan struct{} // cap 1: the ready queue or the set changed
	closedCh chan struct{} // closed by Close
	// loans is unbuffered: a waiter's offer (see loan) is taken only by a
	// consumer blocked in Next at that moment.
	loans chan *loan
	stats counters
	test  testSignals // set only by tests, before the first Add

	// ctx is cancelled by Close; automatic reconnects dial under it.
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

	mu sync.Mutex // guards the fields below, and each member's seq
	// members are the live and stopping members, and dead ones whose Dead
	// event is not yet yielded.
	members map[*pgx.Conn]*member
	adding  map[*pgx.Conn]struct{} // reserved by an Add in progress
	// removed holds removed members whose pending notifications are not
	// all yielded yet: adding the connection again carries them over, so
	// they come before what it receives next.
	removed map[*pgx.Conn]*member
	// recovering holds garbage connections a Recover or WithReconnect is
	// replacing; they count as members for io.EOF.
	recovering map[*pgx.Conn]struct{}
	deaths     map[string]uint64 // Dead events yielded, by causeClass
	ready      fifo
	popped     [1]Event // popLocked's scratch, so that a batch costs no allocation
	garbage    []Garbage
	pass       *drainPass // the drain pass in progress, if any
	seq        uint64
	closed     bool
}

// NewManager returns an empty manager configured by opts.
func NewManager(opts ...Option) *Manager {
	m := &Manager{
		cfg:      newConfig(opts),
		signal:   make(chan struct{}, 1),
		closedCh: make(chan struct{}),
		loans:    make(chan *loan),
		members:  make(map[*pgx.Conn]*member),
		adding:   make(map[*pgx.Conn]struct{}),
		removed:  make(map[*pgx.Conn]*member),

		recovering: make(map[*pgx.Conn]struct{}),
		deaths:     make(map[string]uint64),
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
			return &connError{"add", nth(i), errors.New("closed")}
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
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	committed = true
	for _, mb := range mbs {
		if old := m.removed[mb.conn]; old != nil {
			// Removed with notifications not yet yielded: they come first.
			// The old member's entry in the ready queue then yields nothing.
			delete(m.removed, mb.conn)
			old.mu.Lock()
			mb.pending = slices.Concat(old.pending, mb.pending)
			mb.pendingBytes += old.pendingBytes
			old.pending, old.pendingBytes = nil, 0
			old.mu.Unlock()
		}
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
	if m.signal == nil {
		return errNotNew
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.closedLocked(); err != nil {
		return err
	}
	for i, c := range conns {
		if c == nil {
			return &connError{"add", nth(i), errNilConn}
		}
		_, member := m.members[c]
		_, adding := m.adding[c]
		if member || adding || slices.Contains(conns[:i], c) {
			return &connError{"add", nth(i), ErrAlreadyAdded}
		}
	}
	for _, c := range conns {
		m.adding[c] = struct{}{}
	}
	return nil
}

// admitLocked makes mb, reserved, a member and starts its waiter: from
// reserved to member in one step, for Add and for a recovery (released any
// later, the reservation could be another Add's by then). Must be called
// with m.mu held.
func (m *Manager) admitLocked(mb *member) {
	delete(m.adding, mb.conn)
	m.seq++
	mb.seq = m.seq
	m.members[mb.conn] = mb
	if len(mb.pending) > 0 {
		mb.queued = true
		m.ready.push(entry{w: mb})
	}
	mb.start()
}

// membersLocked returns the members, with the removed ones that still have
// notifications to yield when removed is true. Must be called with m.mu
// held.
func (m *Manager) membersLocked(removed bool) []*member {
	n := len(m.members)
	if removed {
		n += len(m.removed)
	}
	mbs := make([]*member, 0, n)
	for _, mb := range m.members {
		mbs = append(mbs, mb)
	}
	if removed {
		for _, mb := range m.removed {
			mbs = append(mbs, mb)
		}
	}
	return mbs
}

func (m *Manager) unreserve(conns []*pgx.Conn) {
	m.mu.Lock()
	for _, c := range conns {
		delete(m.adding, c)
	}
	m.mu.Unlock()
}

// checkOpen returns why the manager can take no request (not made by
// NewManager, or closed), or nil.
func (m *Manager) checkOpen() error {
	if m.signal == nil {
		return errNotNew
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closedLocked()
}

// closedLocked returns ErrClosed after Close. Must be called with m.mu held.
func (m *Manager) closedLocked() error {
	if m.closed {
		return ErrClosed
	}
	return nil
}

// lookup returns the live member for conn, or why there is none: ErrClosed,
// ErrNotManaged (also for one being removed), an error wrapping the cause of
// its death, or errLent when the caller is the Do function conn is lent to.
func (m *Manager) lookup(conn *pgx.Conn) (*member, error) {
	if m.signal == nil {
		return nil, errNotNew
	}
	if conn == nil {
		return nil, errNilConn
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	mb := m.members[conn]
	if mb == nil {
		defer m.mu.Unlock()
		for _, g := range m.garbage {
			if g.Conn == conn {
				return nil, &deadError{cause: g.Err}
			}
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
	if m.members[mb.conn] == mb {
		delete(m.members, mb.conn)
	}
	mb.mu.Lock()
	left := len(mb.pending) > 0
	mb.mu.Unlock()
	if left {
		m.removed[mb.conn] = mb
	}
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
	return slices.Clone(m.garbage)
}

// TakeGarbage removes the dead connections from the manager and returns
// them: the caller owns them from then on (they are closed; their PID,
// cause and channels remain for inspection).
func (m *Manager) TakeGarbage() []Garbage {
	m.mu.Lock()
	defer m.mu.Unlock()
	g := m.garbage
	m.garbage = nil
	// A reconnect in progress gives up at its next step; until then the
	// taken connections no longer keep the set from being empty.
	for _, x := range g {
		delete(m.recovering, x.Conn)
	}
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
// waiting for it; conn is closed when fn returns.
//
// LISTEN and UNLISTEN run inside fn are not tracked for recovery: change
// channels with [Manager.Listen] and [Manager.Unlisten].
//
// Do waits for the waiter to let go of conn until ctx ends. It returns
// [ErrNotManaged] for a connection that is not a member, an error matching
// [ErrDead] and wrapping the cause for one that died, and [ErrClosed] after
// Close (also for a Do still waiting when Close is called).
func (m *Manager) Do(ctx context.Context, conn *pgx.Conn, fn func(*pgx.Conn) error) error {
	if fn == nil {
		return errors.New("pgnotify: Do: nil function")
	}
	mb, err := m.lookup(conn)
	if err != nil {
		return err
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
			r.released <- nil // taken meanwhile: hand the connection straight back
		}
		return ctx.Err()
	}
	// A request this goroutine makes on conn from inside fn would wait
	// for fn to return: lookup refuses it.
	mb.mu.Lock()
	mb.borrower = goid()
	mb.mu.Unlock()
	defer func() {
		mb.mu.Lock()
		mb.borrower = 0
		mb.mu.Unlock()
		r.released <- err
		// Return once what fn received is pending (or the Dead event is
		// queued), so the caller's next Next or Drain sees it.
		switch afterErr := <-r.done; {
		case afterErr == nil:
		case err == nil:
			err = afterErr
		default:
			err = errors.Join(err, afterErr)
		}
	}()
	return fn(mb.conn)
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
	for _, c := range channels {
		if err := ValidateChannel(c); err != nil {
			return err
		}
	}
	if len(channels) == 0 {
		return m.checkOpen()
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
	if m.members[mb.conn] == mb {
		delete(m.members, mb.conn)
	}
	m.garbage = append(m.garbage, g)
	m.deaths[causeClass(cause)]++
	if m.cfg.dial != nil && !m.closed {
		// Recovery starts only now, so its Recovered event cannot overtake
		// the Dead one.
		m.recovering[g.Conn] = struct{}{}
		m.goReconnect(g, m.cfg.firstAttempt(mb))
	}
	return Event{Kind: Dead, Conn: mb.conn, Err: cause}
}

// emptyLocked reports whether the set has nothing left to yield. Must be
// called with m.mu held.
func (m *Manager) emptyLocked() bool {
	return len(m.members) == 0 && len(m.recovering) == 0 && m.ready.len() == 0
}

// Next returns the next event: a [Batch] of notifications from one
// connection, [Idle] when nothing happened within the timeout, a [Dead]
// connection or a [Recovered] one. When several connections have batches,
// they come in the order they became ready.
//
// Next returns io.EOF (unwrapped) when the set is empty and nothing is
// pending, and at the end of each drain pass when the timeout is 0;
// [ErrClosed] after Close; ctx's error when ctx ends first. Call it from
// one goroutine at a time: a Next, Events or Drain called while another is
// running returns an error at once.
//
// While it waits, Next may decode a ready member's burst itself, on the
// consumer's core (see loan.go): that read is bounded by the pending bounds,
// and a batch it has read is returned even if ctx ended meanwhile, since
// those notifications are already off the wire.
func (m *Manager) Next(ctx context.Context) (Event, error) {
	if m.signal == nil {
		return Event{}, errNotNew
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
		if m.closed {
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
			return Event{}, io.EOF
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
			l.decode()
		case <-m.closedCh:
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

// Events ranges over [Manager.Next]. It stops quietly at io.EOF and yields
// any other error once, last. It is a single-use stream, consumed by one
// goroutine; with a zero timeout it covers one drain pass.
func (m *Manager) Events(ctx context.Context) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		for {
			ev, err := m.Next(ctx)
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
// Close waits for the waiters to stop and for automatic reconnects in
// progress to give up, until ctx ends. It never waits for a [Manager.Do]
// function: a member lent to one is closed by its waiter when the function
// returns, after Close has returned (so Close may be called from inside a
// Do function). If ctx ends first, the sockets of the members still
// stopping are closed under them, Close returns ctx's error, and what it
// could not stop — a reconnect whose dial ignores its context — finishes in
// the background: a connection it then makes is closed, not added.
func (m *Manager) Close(ctx context.Context) error {
	if m.signal == nil {
		return errNotNew
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	mbs := m.membersLocked(false)
	garbage := m.garbage
	m.mu.Unlock()
	close(m.closedCh)
	m.cancel()

	// stopping are the members Close waits for; ours those whose
	// connection it closes (not one a Remove is taking back).
	var stopping, ours []*member
	for _, mb := range mbs {
		lent, mine := mb.stopForClose()
		if !lent {
			stopping = append(stopping, mb)
			if mine {
				ours = append(ours, mb)
			}
		} else if l := m.cfg.logger; l != nil {
			l.Info("pgnotify: close: connection lent to Do; closed when its function returns", "pid", mb.conn.PgConn().PID())
		}
	}
	var err error
	if !exitedBy(ctx, stopping) {
		err = ctx.Err()
		// Out of time: a stopping waiter is in a round trip of its own
		// timeout. Closing its socket ends that at once.
		for _, mb := range ours {
			mb.netConn.Close()
		}
		for _, mb := range stopping {
			<-mb.exited
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

// exitedBy waits for the waiters of mbs to return, until ctx ends, and
// reports whether they all did.
func exitedBy(ctx context.Context, mbs []*member) bool {
	for _, mb := range mbs {
		select {
		case <-mb.exited:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// logDeath reports a death when a logger was given.
func (m *Manager) logDeath(mb *member, cause error) {
	if l := m.cfg.logger; l != nil {
		l.Warn("pgnotify: connection died", append(connAttrs(mb.conn, "pid"), "err", cause)...)
	}
}
