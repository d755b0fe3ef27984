package pgnotify

import (
	"net"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// This file holds a member's state machine: its states, the fields each
// lock guards, and every transition. The waiter that drives a member is in
// waiter.go, the requests other goroutines make of it in request.go.
//
// Lock order: Manager.mu before member.mu. A waiter never holds member.mu
// while it takes Manager.mu, and nobody holds either while waiting for a
// waiter.
//
// A member's life (state), checked at the entry of every request:
//
//	   Add, adopt
//	       │
//	       ▼
//	  stateLive ──────────── exit(cause) ─────────────┐
//	       │  requestStop (Remove): stopErr ErrNotManaged
//	       │  stopForClose (Close): stopErr ErrClosed, closeOnExit
//	       ▼                                          ▼
//	stateStopping ───────── exit(cause) ────────► stateDead
//	       │  exit(nil): the waiter returned          │ Next yields its Dead
//	       ▼                                          ▼ event: buryLocked
//	stateRemoved                                  (garbage)
//
// stopForClose on a stopping member (a Remove in progress) sets stopErr to
// ErrClosed and leaves the connection the Remove's; a Remove that gives up
// sets closeOnExit. Only the waiter makes the exit transitions.
//
// What the waiter is doing with the connection (doing), set by the waiter
// at the top of each turn of its loop, read by others to know how to reach
// it:
//
//	doingOwn ──► doingRead  it is inside pgx's read (or has lent the read
//	                        to the consumer, see loan): interrupt it by
//	                        moving the socket's deadline
//	doingOwn ──► doingLend  a Do function has the connection: Close does not
//	                        wait for it
//	doingRead, doingLend ──► doingOwn   back at the top of the loop
type memberState uint8

const (
	stateLive     memberState = iota
	stateStopping             // Remove or Close asked the waiter to return
	stateRemoved              // the waiter returned; the connection is back with its owner (or closed)
	stateDead                 // a read, a round trip or a Do function lost the connection
)

// activity is what the waiter is doing with the connection.
type activity uint8

const (
	doingOwn  activity = iota // the waiter works on its own: deciding, parked, a round trip
	doingRead                 // inside pgx's read: only the deadline reaches it
	doingLend                 // the connection is lent to a Do function
)

// pastDeadline interrupts a read at once.
var pastDeadline = time.Unix(1, 0)

// member is one managed connection and its waiter.
type member struct {
	// Set before the waiter starts; read-only after.
	m       *Manager
	conn    *pgx.Conn // the waiter's, or a Do function's while lent
	netConn net.Conn  // conn's socket: others touch only its deadline (and Close its Close)
	adopted time.Time // when Recover added it (zero for Add)
	attempt int       // reconnect attempt that produced it, for backoff
	exited  chan struct{}
	wake    chan struct{} // cap 1: a parked waiter has room again, or a request

	// Guarded by Manager.mu.
	seq uint64 // order of Add, for Conns

	mu sync.Mutex // guards the fields below
	// Life.
	state       memberState
	stopErr     error // stateStopping, stateRemoved: what requests fail with
	closeOnExit bool  // the waiter closes the connection as it returns
	cause       error // stateDead: why
	// The waiter.
	doing         activity
	deadlineMoved bool       // a request moved the deadline since the waiter last looked
	reqs          []*request // waiting for the waiter, in order
	borrower      uint64     // goroutine id of the Do caller running its function; 0 if none
	// What the consumer has to take.
	pending      []*Notification // received, not yet taken
	pendingBytes int             // sizeOf(pending)
	queued       bool            // an entry for this member is in m.ready (or being pushed)
	channels     map[string]struct{}
}

func newMember(m *Manager, conn *pgx.Conn, channels []string, pending []*Notification) *member {
	w := &member{
		m:        m,
		conn:     conn,
		netConn:  conn.PgConn().Conn(),
		exited:   make(chan struct{}),
		wake:     make(chan struct{}, 1),
		pending:  pending,
		channels: make(map[string]struct{}, len(channels)),
	}
	w.pendingBytes = sizeOf(pending)
	for _, c := range channels {
		w.channels[c] = struct{}{}
	}
	return w
}

// start launches the waiter. The member must be in m.members already.
// Close waits for a waiter through exited, not m.wg: it must not wait for
// one whose connection is lent to a Do.
func (w *member) start() {
	go w.run()
}

// liveLocked reports whether the member is a live member: not stopping,
// removed or dead. Must be called with w.mu held.
func (w *member) liveLocked() bool { return w.state == stateLive }

// unusableLocked returns why requests can't be served, or nil when live.
// Must be called with w.mu held.
func (w *member) unusableLocked() error {
	switch w.state {
	case stateDead:
		return &deadError{cause: w.cause}
	case stateStopping, stateRemoved:
		return w.stopErr
	}
	return nil
}

// submit queues r for the waiter and interrupts its read. It fails at once
// if the member is no longer live.
func (w *member) submit(r *request) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.unusableLocked(); err != nil {
		return err
	}
	w.reqs = append(w.reqs, r)
	w.interruptLocked()
	return nil
}

// interruptLocked makes the waiter look at its requests: a read in progress
// ends at once through the socket's deadline (pgconn keeps the connection
// open on a timeout, and keeps a half-read message for the next read); a
// waiter parked on a full buffer is woken. The deadline is only moved while
// the waiter is reading, never while the connection is lent out or pinged.
// Must be called with w.mu held.
func (w *member) interruptLocked() {
	if w.doing == doingRead {
		w.netConn.SetReadDeadline(pastDeadline)
		w.deadlineMoved = true
	}
	w.roomFreed()
}

// roomFreed wakes a waiter parked on a full buffer.
func (w *member) roomFreed() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// requestStop: live → stopping, for Remove.
func (w *member) requestStop() {
	w.mu.Lock()
	if w.state == stateLive {
		w.state, w.stopErr = stateStopping, ErrNotManaged
	}
	w.interruptLocked()
	w.mu.Unlock()
}

// stopForClose: live → stopping, for Close: the waiter returns and closes
// the connection, unless a Remove is already taking it back. The queued
// requests fail with ErrClosed at once: the waiter may be lent to a Do
// whose function runs for long. It reports whether the connection is lent
// (Close does not wait for such a member; its waiter closes the connection
// when the function returns) and whether the connection is Close's to
// close.
func (w *member) stopForClose() (lent, ours bool) {
	w.mu.Lock()
	switch w.state {
	case stateLive:
		w.state, w.closeOnExit = stateStopping, true
		w.stopErr = ErrClosed
	case stateStopping, stateRemoved:
		w.stopErr = ErrClosed
	}
	lent, ours = w.doing == doingLend, w.closeOnExit
	reqs := w.reqs
	w.reqs = nil
	w.interruptLocked()
	w.mu.Unlock()
	for _, r := range reqs {
		r.fail(ErrClosed)
	}
	return lent, ours
}

// giveUpLocked is a Remove that stopped waiting for the waiter: the
// connection, if the waiter still has it, is closed as it returns. It
// reports whether the waiter still had it. Must be called with w.mu held.
func (w *member) giveUpLocked() bool {
	if w.state != stateStopping {
		return false
	}
	w.closeOnExit = true
	return true
}

// exit is the waiter's last transition: stopping → removed when cause is
// nil, anything → dead otherwise. last (what the waiter read but had not
// published) and what pgx still buffers become pending, the queued requests
// fail, and the consumer is told: a Dead event, or the batches a removed
// member leaves. On a death the caller has closed the connection already.
func (w *member) exit(cause error, last []*Notification) {
	if cause == nil {
		// The connection goes back to its owner with no deadline of ours.
		w.netConn.SetReadDeadline(time.Time{})
	}
	ns := popBuffered(w.conn, nil)
	w.mu.Lock()
	w.appendLocked(last, sizeOf(last))
	w.appendLocked(ns, sizeOf(ns))
	reqErr := w.stopErr
	if cause != nil {
		w.state, w.cause = stateDead, cause
		reqErr = &deadError{cause: cause}
	} else {
		w.state = stateRemoved
	}
	w.doing = doingOwn
	reqs := w.reqs
	w.reqs = nil
	closeConn := cause == nil && w.closeOnExit
	push := (cause != nil || len(w.pending) > 0) && w.markQueuedLocked()
	w.mu.Unlock()
	for _, r := range reqs {
		r.fail(reqErr)
	}
	if closeConn {
		w.closeConn()
	}
	if push {
		w.m.pushReady(w)
	}
	if cause != nil {
		w.m.logDeath(w, cause)
	} else {
		w.m.forget(w)
	}
}

// appendLocked adds ns, of size bytes, to pending. It reports whether ns
// became pending whole (pending was empty), in which case the caller must
// not reuse ns. Must be called with w.mu held.
func (w *member) appendLocked(ns []*Notification, size int) (whole bool) {
	if len(ns) == 0 {
		return false
	}
	if len(w.pending) == 0 {
		// Hand it over rather than copy it: the consumer takes pending as
		// the caller's batch anyway.
		w.pending = ns
		whole = true
	} else {
		w.pending = append(w.pending, ns...)
	}
	w.pendingBytes += size
	return whole
}

// markQueuedLocked records that the member has something for the consumer
// and reports whether the caller must push it onto the ready queue. Must be
// called with w.mu held.
func (w *member) markQueuedLocked() bool {
	if w.queued {
		return false
	}
	w.queued = true
	return true
}

// publish adds ns, of size bytes, to pending and queues the member for the
// consumer. It reports whether ns became pending whole (see appendLocked).
func (w *member) publish(ns []*Notification, size int) (whole bool) {
	if len(ns) == 0 {
		return false
	}
	w.mu.Lock()
	whole = w.appendLocked(ns, size)
	w.m.stats.raisePeak(len(w.pending), w.pendingBytes)
	push := w.markQueuedLocked()
	w.mu.Unlock()
	if push {
		w.m.pushReady(w)
	}
	return whole
}

// publishBuffered publishes what pgx buffered during a round trip.
func (w *member) publishBuffered() {
	ns := popBuffered(w.conn, nil)
	w.publish(ns, sizeOf(ns))
}

// channelList returns the tracked channels, sorted.
func (w *member) channelList() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.channels))
	for c := range w.channels {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// notificationOverhead is what a notification costs beyond its channel and
// payload bytes, counted against WithMaxPendingBytes: the struct and its
// pointer, rounded up.
const notificationOverhead = 48

// sizeOf returns the bytes ns count for against WithMaxPendingBytes.
func sizeOf(ns []*Notification) int {
	n := 0
	for _, x := range ns {
		n += notificationOverhead + len(x.Channel) + len(x.Payload)
	}
	return n
}
