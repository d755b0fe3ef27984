package pgnotify

import (
	"net"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify/internal/backoff"
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

// owner is all a member reaches back into its Manager for, so that a
// waiter can run (and be tested) without a whole Manager. Besides these, a
// member reads its Manager's config and counts into its counters.
type owner interface {
	// pushReady puts mb on the ready queue for the consumer; wake also
	// wakes a consumer parked in Next (not when the consumer publishes).
	pushReady(mb *member, wake bool)
	// offerLoan offers l, a read of mb's burst, to a consumer parked in
	// Next at this moment, without waiting; it reports whether one took
	// it (see loan.go).
	offerLoan(l *loan) bool
	// waiterDone is told that mb's waiter returned: with cause nil, the
	// member was removed (and may still owe notifications), else it died
	// of cause.
	waiterDone(mb *member, cause error)
	// sampleQueue is told the server's notification queue usage a health
	// check read; who names the connection, for a log line.
	sampleQueue(usage float64, who func() []any)
}

// member is one managed connection and its waiter.
type member struct {
	// Set before the waiter starts; read-only after.
	own     owner     // the Manager
	cfg     *config   // the Manager's
	stats   *counters // the Manager's
	conn    *pgx.Conn // the waiter's, or a Do function's while lent
	netConn net.Conn  // conn's socket: others touch only its deadline (and Close its Close)
	// bo is the reconnect backoff of the outage that produced this
	// member (nil for Add and Recover): its death continues that outage
	// or starts a new one (see internal/backoff's reset rule).
	bo     *backoff.Backoff
	exited chan struct{}
	wake   chan struct{} // cap 1: a parked waiter has room again, or a request

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
	mb := &member{
		own:      m,
		cfg:      &m.cfg,
		stats:    &m.stats,
		conn:     conn,
		netConn:  conn.PgConn().Conn(),
		exited:   make(chan struct{}),
		wake:     make(chan struct{}, 1),
		pending:  pending,
		channels: make(map[string]struct{}, len(channels)),
	}
	mb.pendingBytes = sizeOf(pending)
	for _, c := range channels {
		mb.channels[c] = struct{}{}
	}
	return mb
}

// start launches the waiter. The member must be in m.members already.
// Close waits for a waiter through exited, not m.wg: it must not wait for
// one whose connection is lent to a Do.
func (mb *member) start() {
	go mb.run()
}

// liveLocked reports whether the member is a live member: not stopping,
// removed or dead. Must be called with mb.mu held.
func (mb *member) liveLocked() bool { return mb.state == stateLive }

// unusableLocked returns why requests can't be served, or nil when live.
// Must be called with mb.mu held.
func (mb *member) unusableLocked() error {
	switch mb.state {
	case stateDead:
		return &deadError{cause: mb.cause}
	case stateStopping, stateRemoved:
		return mb.stopErr
	}
	return nil
}

// submit queues r for the waiter and interrupts its read. It fails at once
// if the member is no longer live.
func (mb *member) submit(r *request) error {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	if err := mb.unusableLocked(); err != nil {
		return err
	}
	mb.reqs = append(mb.reqs, r)
	mb.interruptLocked()
	return nil
}

// interruptLocked makes the waiter look at its requests: a read in progress
// ends at once through the socket's deadline (pgconn keeps the connection
// open on a timeout, and keeps a half-read message for the next read); a
// waiter parked on a full buffer is woken. The deadline is only moved while
// the waiter is reading, never while the connection is lent out or pinged.
// Must be called with mb.mu held.
func (mb *member) interruptLocked() {
	if mb.doing == doingRead {
		mb.netConn.SetReadDeadline(pastDeadline)
		mb.deadlineMoved = true
	}
	mb.roomFreed()
}

// roomFreed wakes a waiter parked on a full buffer.
func (mb *member) roomFreed() {
	select {
	case mb.wake <- struct{}{}:
	default:
	}
}

// requestStop: live → stopping, for Remove.
func (mb *member) requestStop() {
	mb.mu.Lock()
	if mb.state == stateLive {
		mb.state, mb.stopErr = stateStopping, ErrNotManaged
	}
	mb.interruptLocked()
	mb.mu.Unlock()
}

// stopForClose: live → stopping, for Close: the waiter returns and closes
// the connection, unless a Remove is already taking it back. The queued
// requests fail with ErrClosed at once: the waiter may be lent to a Do
// whose function runs for long. It reports whether the connection is lent
// to a Do function (Close cuts its query and waits for it, unless the
// function is Close's caller: borrower) and whether the connection is
// Close's to close.
func (mb *member) stopForClose() (lent, ours bool, borrower uint64) {
	mb.mu.Lock()
	switch mb.state {
	case stateLive:
		mb.state, mb.closeOnExit = stateStopping, true
		mb.stopErr = ErrClosed
	case stateStopping, stateRemoved:
		mb.stopErr = ErrClosed
	}
	lent, ours, borrower = mb.doing == doingLend, mb.closeOnExit, mb.borrower
	reqs := mb.reqs
	mb.reqs = nil
	mb.interruptLocked()
	mb.mu.Unlock()
	for _, r := range reqs {
		r.fail(ErrClosed)
	}
	return lent, ours, borrower
}

// giveUpLocked is a Remove that stopped waiting for the waiter: the
// connection, if the waiter still has it, is closed as it returns. It
// reports whether the waiter still had it. Must be called with mb.mu held.
func (mb *member) giveUpLocked() bool {
	if mb.state != stateStopping {
		return false
	}
	mb.closeOnExit = true
	return true
}

// exit is the waiter's last transition: stopping → removed when cause is
// nil, anything → dead otherwise. last (what the waiter read but had not
// published) and what pgx still buffers become pending, the queued requests
// fail, and the consumer is told: a Dead event, or the batches a removed
// member leaves. On a death the caller has closed the connection already.
func (mb *member) exit(cause error, last []*Notification) {
	if cause == nil {
		// The connection goes back to its owner with no deadline of ours.
		mb.netConn.SetReadDeadline(time.Time{})
	}
	ns := popBuffered(mb.conn, nil)
	mb.mu.Lock()
	mb.appendLocked(last, sizeOf(last))
	mb.appendLocked(ns, sizeOf(ns))
	reqErr := mb.stopErr
	if cause != nil {
		if mb.bo != nil {
			mb.bo.Down() // now, not when Next yields the death
		}
		mb.state, mb.cause = stateDead, cause
		reqErr = &deadError{cause: cause}
	} else {
		mb.state = stateRemoved
	}
	mb.doing = doingOwn
	reqs := mb.reqs
	mb.reqs = nil
	closeConn := cause == nil && mb.closeOnExit
	push := (cause != nil || len(mb.pending) > 0) && mb.markQueuedLocked()
	mb.mu.Unlock()
	for _, r := range reqs {
		r.fail(reqErr)
	}
	if closeConn {
		mb.closeConn()
	}
	if push {
		mb.own.pushReady(mb, true)
	}
	mb.own.waiterDone(mb, cause)
}

// appendLocked adds ns, of size bytes, to pending. It reports whether ns
// became pending whole (pending was empty), in which case the caller must
// not reuse ns. Must be called with mb.mu held.
func (mb *member) appendLocked(ns []*Notification, size int) (whole bool) {
	if len(ns) == 0 {
		return false
	}
	if len(mb.pending) == 0 {
		// Hand it over rather than copy it: the consumer takes pending as
		// the caller's batch anyway.
		mb.pending = ns
		whole = true
	} else {
		mb.pending = append(mb.pending, ns...)
	}
	mb.pendingBytes += size
	return whole
}

// markQueuedLocked records that the member has something for the consumer
// and reports whether the caller must push it onto the ready queue. Must be
// called with mb.mu held.
func (mb *member) markQueuedLocked() bool {
	if mb.queued {
		return false
	}
	mb.queued = true
	return true
}

// offerLocked is what every publish does under mb.mu: ns, of size bytes,
// joins pending (whole says it was taken as is, see appendLocked), the peak
// is recorded, and push says the caller must queue the member for the
// consumer. Must be called with mb.mu held.
func (mb *member) offerLocked(ns []*Notification, size int) (whole, push bool) {
	whole = mb.appendLocked(ns, size)
	mb.stats.raisePeak(len(mb.pending), mb.pendingBytes)
	return whole, mb.markQueuedLocked()
}

// publish adds ns, of size bytes, to pending and queues the member for the
// consumer, waking it if wake is set (not when the consumer publishes). It
// reports whether ns became pending whole (see appendLocked).
func (mb *member) publish(ns []*Notification, size int, wake bool) (whole bool) {
	if len(ns) == 0 {
		return false
	}
	mb.mu.Lock()
	whole, push := mb.offerLocked(ns, size)
	mb.mu.Unlock()
	if push {
		mb.own.pushReady(mb, wake)
	}
	return whole
}

// publishBuffered publishes what pgx buffered during a round trip.
func (mb *member) publishBuffered() {
	ns := popBuffered(mb.conn, nil)
	mb.publish(ns, sizeOf(ns), true)
}

// channelList returns the tracked channels, sorted.
func (mb *member) channelList() []string {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	out := make([]string, 0, len(mb.channels))
	for c := range mb.channels {
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
		n += sizeOfOne(x)
	}
	return n
}

// sizeOfOne returns the bytes n counts for against WithMaxPendingBytes.
func sizeOfOne(n *Notification) int {
	return notificationOverhead + len(n.Channel) + len(n.Payload)
}
