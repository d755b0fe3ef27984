package pgnotify

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"
)

// This file holds the member set's moving parts: one waiter goroutine per
// connection, the requests other goroutines make of it, and the ready queue
// through which waiters hand batches to the consumer. It is the only file
// that starts goroutines.
//
// Lock order: Manager.mu before member.mu. A waiter never holds member.mu
// while it takes Manager.mu, and nobody holds either while waiting for a
// waiter.

// memberState is where a member is in its life.
type memberState uint8

const (
	stateLive    memberState = iota
	stateDead                // its read failed; the Dead event is queued or yielded
	stateRemoved             // Remove or Close stopped its waiter
)

// errClosedInDo is the cause of death of a connection a Do function closed
// without returning an error.
var errClosedInDo = errors.New("pgnotify: connection closed inside Do")

// errTxLeftOpen is why Do failed when its function left a transaction
// open: a session in a transaction receives no notification.
var errTxLeftOpen = errors.New("pgnotify: Do: fn left the connection in a transaction")

// pastDeadline interrupts a read at once.
var pastDeadline = time.Unix(1, 0)

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

// member is one managed connection and its waiter.
type member struct {
	m       *Manager
	conn    *pgx.Conn
	netConn net.Conn  // conn's socket: only its deadline is touched by others
	seq     uint64    // order of Add, for Conns
	adopted time.Time // when Recover added it (zero for Add)
	attempt int       // reconnect attempt that produced it, for backoff

	exited chan struct{} // closed when the waiter returns
	wake   chan struct{} // cap 1: a parked waiter has room again, or a request

	mu           sync.Mutex
	pending      []*Notification // received, not yet taken by the consumer
	pendingBytes int             // sizeOf(pending)
	queued       bool            // an entry for this member is in m.ready (or being pushed)
	waiting      bool            // the waiter is inside pgx reading: interrupt through the deadline
	interr       bool            // a request moved the deadline to the past
	lent         bool            // the waiter is serving a Do: the connection may be with its function
	borrower     uint64          // goroutine id of the Do caller running its function; 0 if none
	reqs         []*request
	stop         bool // Remove or Close asked the waiter to return
	closing      bool // Close stopped it: requests fail with ErrClosed
	closeOut     bool // close the connection when the waiter returns (Close, or a Remove gave up)
	state        memberState
	cause        error               // why it died (stateDead)
	channels     map[string]struct{} // tracked LISTEN set, for Garbage and Recover
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

// requestKind says who performs a request.
type requestKind uint8

const (
	// reqHandover lends the connection to the requesting goroutine (Do).
	reqHandover requestKind = iota
	// reqRoundTrip makes the waiter itself do a round trip (drain pass).
	reqRoundTrip
)

// request states, moved with CAS so that a request is either served or
// withdrawn, never both.
const (
	reqPending int32 = iota
	reqServed
	reqWithdrawn
)

// request is something another goroutine needs done on the connection.
type request struct {
	kind  requestKind
	state atomic.Int32
	// done receives nil once: for reqHandover, the caller owns the
	// connection until it closes released; for reqRoundTrip, the round trip
	// is over. A non-nil error means the request was not served.
	done     chan error
	released chan struct{}
	fnErr    error         // written by the caller before it closes released
	settled  chan struct{} // closed once what fn left in pgx's buffer is published
	afterErr error         // written by the waiter before it closes settled: what it had to undo
}

func newRequest(kind requestKind) *request {
	r := &request{kind: kind, done: make(chan error, 1)}
	if kind == reqHandover {
		r.released = make(chan struct{})
		r.settled = make(chan struct{})
	}
	return r
}

// fail answers a request that will not be served.
func (r *request) fail(err error) {
	if r.state.CompareAndSwap(reqPending, reqServed) {
		r.done <- err
	}
}

// withdraw takes back a request whose caller stopped waiting. It reports
// false if the waiter already took it, in which case done has (or will
// have) an answer the caller must honour.
func (r *request) withdraw() bool {
	return r.state.CompareAndSwap(reqPending, reqWithdrawn)
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

// unusableLocked returns why requests can't be served, or nil when live.
// Must be called with w.mu held.
func (w *member) unusableLocked() error {
	switch {
	case w.state == stateDead:
		return &deadError{cause: w.cause}
	case w.closing:
		return ErrClosed
	case w.state == stateRemoved || w.stop:
		return ErrNotManaged
	}
	return nil
}

// interruptLocked makes the waiter look at its requests: a read in progress
// ends at once through the socket's deadline (pgconn keeps the connection
// open on a timeout, and keeps a half-read message for the next read); a
// waiter parked on a full buffer is woken. The deadline is only moved while
// the waiter is inside its read, never while the connection is lent out or
// pinged. Must be called with w.mu held.
func (w *member) interruptLocked() {
	if w.waiting {
		w.netConn.SetReadDeadline(pastDeadline)
		w.interr = true
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// waiter actions, chosen under w.mu at the top of each loop.
const (
	actWait = iota
	actStop
	actServe
	actPark
	actArm
	actPing
)

// run is the waiter: the only goroutine that uses w.conn, except a caller
// of Do while the connection is lent to it.
func (w *member) run() {
	defer close(w.exited)

	var (
		maxPending = w.m.cfg.maxPending
		maxBytes   = w.m.cfg.maxBytes
		every      = w.m.cfg.healthEvery
		burst      []*Notification // read since the last publish; reused
		burstBytes int             // sizeOf(burst)
		room       int             // what pending may still take
		byteRoom   int             // the bytes pending may still take
		armed      time.Time       // read deadline in force; zero: none
		healthAt   time.Time       // when a quiet connection is pinged
		traffic    bool            // something arrived since healthAt was set
		pingDue    bool
	)
	quiet := func() {
		traffic, pingDue = false, false
		if every > 0 {
			healthAt = time.Now().Add(every)
		}
	}
	quiet()

	for {
		var req *request
		act := actWait
		w.mu.Lock()
		push := false
		fresh := 0
		if len(burst) > 0 {
			if len(w.pending) == 0 {
				// Hand the burst over whole rather than copy it: the
				// consumer takes pending as the caller's batch anyway.
				w.pending = burst
				fresh = len(burst)
			} else {
				w.pending = append(w.pending, burst...)
				clear(burst)
				burst = burst[:0]
			}
			w.pendingBytes += burstBytes
			burstBytes = 0
			w.m.stats.raisePeak(len(w.pending), w.pendingBytes)
			traffic = true
			push = w.markQueuedLocked()
		}
		room = maxPending - len(w.pending)
		byteRoom = maxBytes - w.pendingBytes
		w.waiting = false
		w.lent = false
		if w.interr {
			// A request moved the deadline, maybe after the read had
			// already returned: armed no longer says what is in force.
			w.interr = false
			armed = pastDeadline
		}
		switch {
		case w.stop:
			act = actStop
		case len(w.reqs) > 0:
			act, req = actServe, w.reqs[0]
			w.reqs[0] = nil
			w.reqs = w.reqs[1:]
			w.lent = req.kind == reqHandover
		case room <= 0 || byteRoom <= 0:
			act = actPark
		case pingDue:
			act = actPing
		case !armed.Equal(healthAt):
			act = actArm
		default:
			w.waiting = true
		}
		w.mu.Unlock()
		if push {
			w.m.pushReady(w)
		}
		if fresh > 0 {
			// Size the next burst's buffer like the last one, so a steady
			// stream reads without regrowing it.
			burst = make([]*Notification, 0, min(max(fresh, 16), maxPending))
		}

		switch act {
		case actStop:
			w.finish()
			return
		case actServe:
			armed = w.setDeadline(armed, time.Time{})
			if !w.serve(req) {
				return
			}
			quiet()
			continue
		case actPark:
			// Not quiet: it waits for the consumer, so no ping (a ping
			// would pull the whole backlog into memory).
			<-w.wake
			quiet()
			continue
		case actPing:
			w.m.stats.pings.Add(1)
			armed = w.setDeadline(armed, time.Time{})
			if !w.roundTrip(true) {
				return
			}
			quiet()
			continue
		case actArm:
			armed = w.setDeadline(armed, healthAt)
			continue
		}

		// What is read goes into burst, published at the top of the loop.
		n, err := w.conn.WaitForNotification(context.Background())
		if n == nil && err == nil {
			// A notification arrived and went to the config's
			// OnNotification instead of pgx's buffer: deaf, so dead.
			err = errNotHeard
		}
		if n != nil {
			burst = append(burst, n)
			burstBytes += notificationOverhead + len(n.Channel) + len(n.Payload)
			if err == nil && room > 1 && burstBytes < byteRoom && w.conn.PgConn().Frontend().ReadBufferLen() > 0 {
				armed = pastDeadline
				err = w.readBurst(&burst, &burstBytes, room, byteRoom)
			}
		}
		if err == nil {
			continue
		}
		if pgconn.Timeout(err) && !w.conn.IsClosed() {
			// Our interrupt or the health deadline: the connection is
			// fine. armed no longer describes the socket's deadline.
			armed = pastDeadline
			if every > 0 && !time.Now().Before(healthAt) {
				if traffic {
					quiet()
				} else {
					pingDue = true
				}
			}
			continue
		}
		// Any other read error is fatal: pgconn closes the connection on
		// everything but a timeout (peekMessage), including the server's
		// FATAL ErrorResponse, which it returns as the *PgError. Close it
		// ourselves for anything pgx left open, so a member is never live
		// with an unknown protocol state.
		w.closeConn()
		w.die(err, burst)
		return
	}
}

// goid returns the calling goroutine's id, read from its stack header. The
// runtime offers no other way to tell that a request on a lent member comes
// from inside the Do function holding it, which would wait for itself
// forever. It is called once per Do, and per request only while a member is
// lent.
func goid() uint64 {
	var buf [64]byte
	b := bytes.TrimPrefix(buf[:runtime.Stack(buf[:], false)], []byte("goroutine "))
	var id uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint64(c-'0')
	}
	return id
}

// readBurst takes the notifications already in pgx's read buffer, up to
// room in all and until size reaches byteRoom, without a lock or a wake-up
// per notification. The past deadline makes the read that would block, on a
// partial message or on one that is not a notification, fail at once
// instead, so a burst is never held back unpublished. It returns a read
// error other than that timeout.
func (w *member) readBurst(burst *[]*Notification, size *int, room, byteRoom int) error {
	w.netConn.SetReadDeadline(pastDeadline)
	for len(*burst) < room && *size < byteRoom {
		n, err := w.conn.WaitForNotification(context.Background())
		if n != nil {
			*burst = append(*burst, n)
			*size += notificationOverhead + len(n.Channel) + len(n.Payload)
		}
		if err != nil {
			if pgconn.Timeout(err) && !w.conn.IsClosed() {
				return nil
			}
			return err
		}
		if n == nil {
			return nil
		}
	}
	return nil
}

// setDeadline moves the read deadline to t unless it is there already, and
// returns the deadline now in force.
func (w *member) setDeadline(armed, t time.Time) time.Time {
	if !armed.Equal(t) {
		w.netConn.SetReadDeadline(t)
	}
	return t
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

// publish adds notifications pgx buffered during a round trip.
func (w *member) publish(ns []*Notification) {
	if len(ns) == 0 {
		return
	}
	w.mu.Lock()
	w.pending = append(w.pending, ns...)
	w.pendingBytes += sizeOf(ns)
	w.m.stats.raisePeak(len(w.pending), w.pendingBytes)
	push := w.markQueuedLocked()
	w.mu.Unlock()
	if push {
		w.m.pushReady(w)
	}
}

// serve performs one request and reports whether the member is still live.
func (w *member) serve(r *request) bool {
	if !r.state.CompareAndSwap(reqPending, reqServed) {
		return true // withdrawn: its caller stopped waiting
	}
	switch r.kind {
	case reqHandover:
		r.done <- nil
		<-r.released
		defer close(r.settled)
		if !w.conn.IsClosed() {
			if s := w.conn.PgConn().TxStatus(); s != 'I' {
				r.afterErr = w.rollback(s)
			}
		}
		w.publish(popBuffered(w.conn, nil))
		if w.conn.IsClosed() {
			cause := cmp.Or(r.fnErr, r.afterErr, errClosedInDo)
			w.die(cause, nil)
			return false
		}
		return true
	default:
		live := w.roundTrip(false)
		r.done <- nil
		return live
	}
}

// roundTrip pings the server on a fresh context with its own timeout and
// reports whether the connection survived; health says the ping is a health
// check, which a failure's cause records. The server sends every
// notification committed before the ping ahead of its ReadyForQuery, so
// after it pgx's buffer holds all of them; they are published before a
// death is.
func (w *member) roundTrip(health bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), w.m.cfg.roundTripTimeout())
	err := w.conn.PgConn().Ping(ctx)
	cancel()
	w.publish(popBuffered(w.conn, nil))
	if err == nil && !w.conn.IsClosed() {
		return true
	}
	if err == nil {
		err = errors.New("pgnotify: connection closed during ping")
	}
	if health {
		err = fmt.Errorf("%w: %w", errHealth, err)
	}
	w.closeConn()
	w.die(err, nil)
	return false
}

// rollback ends the transaction a Do function left open (status s), which
// would keep the member deaf: a session in a transaction receives no
// notification until it ends, while health pings still pass. It returns the
// error Do reports; if the ROLLBACK fails the connection is closed, and the
// member dies of that error.
func (w *member) rollback(s byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), w.m.cfg.roundTripTimeout())
	defer cancel()
	if _, err := w.conn.PgConn().Exec(ctx, "ROLLBACK").ReadAll(); err != nil {
		w.closeConn()
		return fmt.Errorf("%w (status %q), and the ROLLBACK failed: %w", errTxLeftOpen, s, err)
	}
	return fmt.Errorf("%w (status %q); it was rolled back", errTxLeftOpen, s)
}

// closeConn closes a connection the waiter owns, without waiting on a dead
// peer for long.
func (w *member) closeConn() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	w.conn.Close(ctx)
	cancel()
}

// die records the cause of death after what the connection received (last,
// then what pgx still buffers), fails the queued requests and queues the
// Dead event. The waiter returns after.
func (w *member) die(cause error, last []*Notification) {
	ns := popBuffered(w.conn, nil)
	w.mu.Lock()
	w.pending = append(w.pending, last...)
	w.pending = append(w.pending, ns...)
	w.pendingBytes += sizeOf(last) + sizeOf(ns)
	w.state = stateDead
	w.cause = cause
	w.waiting = false
	reqs := w.reqs
	w.reqs = nil
	push := w.markQueuedLocked()
	w.mu.Unlock()
	for _, r := range reqs {
		r.fail(&deadError{cause: cause})
	}
	if push {
		w.m.pushReady(w)
	}
	w.m.logDeath(w, cause)
}

// finish ends a waiter asked to stop: what pgx buffered is published, the
// queued requests fail, and the member leaves the set.
func (w *member) finish() {
	// The connection goes back to its owner with no deadline of ours on it.
	w.netConn.SetReadDeadline(time.Time{})
	ns := popBuffered(w.conn, nil)
	w.mu.Lock()
	w.pending = append(w.pending, ns...)
	w.pendingBytes += sizeOf(ns)
	w.state = stateRemoved
	w.waiting = false
	reqs := w.reqs
	w.reqs = nil
	closeOut := w.closeOut
	reqErr := ErrNotManaged
	if w.closing {
		reqErr = ErrClosed
	}
	push := len(w.pending) > 0 && w.markQueuedLocked()
	w.mu.Unlock()
	for _, r := range reqs {
		r.fail(reqErr)
	}
	if closeOut {
		w.closeConn()
	}
	if push {
		w.m.pushReady(w)
	}
	w.m.forget(w)
}

// requestStop asks the waiter to return (for Remove).
func (w *member) requestStop() {
	w.mu.Lock()
	w.stop = true
	w.interruptLocked()
	w.mu.Unlock()
}

// stopForClose asks the waiter to return and close the connection, unless a
// Remove is already taking it back, and fails the queued requests with
// ErrClosed at once: the waiter may be lent to a Do whose function runs for
// long. It reports whether the connection is lent (Close does not wait for
// such a member; its waiter closes the connection when the function
// returns) and whether the connection is Close's to close.
func (w *member) stopForClose() (lent, ours bool) {
	w.mu.Lock()
	if !w.stop {
		w.stop = true
		w.closeOut = true
	}
	w.closing = true
	lent, ours = w.lent, w.closeOut
	reqs := w.reqs
	w.reqs = nil
	w.interruptLocked()
	w.mu.Unlock()
	for _, r := range reqs {
		r.fail(ErrClosed)
	}
	return lent, ours
}

// roomFreed wakes a waiter parked on a full buffer.
func (w *member) roomFreed() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
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

// entry is one item of the ready queue: a member with something for the
// consumer, or an event made in advance (Recovered).
type entry struct {
	w  *member
	ev *Event
}

// fifo is the ready queue: members in the order they became ready, so one
// busy connection cannot starve the others.
type fifo struct {
	items []entry
	head  int
}

func (q *fifo) len() int { return len(q.items) - q.head }

func (q *fifo) push(e entry) {
	if q.head > 0 && q.head >= len(q.items)/2 {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items = q.items[:n]
		q.head = 0
	}
	q.items = append(q.items, e)
}

func (q *fifo) pop() (entry, bool) {
	if q.head == len(q.items) {
		return entry{}, false
	}
	e := q.items[q.head]
	q.items[q.head] = entry{}
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	}
	return e, true
}

// pass is one drain pass: a round trip on every live member, made by their
// waiters, at most drainConcurrency at a time. A member that dies in the
// pass yields a Dead event; it never fails the pass or cancels the others.
type pass struct {
	done      chan struct{} // closed when every round trip is over
	collected bool          // events taken from the ready queue (guarded by Manager.mu)
	events    []Event       // owned by the consumer once collected
}

// startPass begins a pass over ws. Its round trips run on their own
// timeouts, never on the consumer's context: pgx closes a connection whose
// query is cancelled.
func (m *Manager) startPass(ws []*member) *pass {
	p := &pass{done: make(chan struct{})}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(p.done)
		var g errgroup.Group
		g.SetLimit(drainConcurrency)
		for _, w := range ws {
			g.Go(func() error {
				r := newRequest(reqRoundTrip)
				if w.submit(r) == nil {
					<-r.done
				}
				return nil
			})
		}
		g.Wait()
	}()
	return p
}

// goReconnect starts the automatic recovery of a dead connection.
func (m *Manager) goReconnect(g Garbage, attempt int) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.reconnect(g, attempt)
	}()
}

// backoff returns the delay before reconnect attempt n (from 0): drawn with
// full jitter between min and min·2ⁿ, capped at max.
func backoff(min, max time.Duration, n int) time.Duration {
	ceil := max
	if n < 62 && min<<n > 0 && min<<n < max {
		ceil = min << n
	}
	return min + rand.N(ceil-min+1)
}

// waitDone returns a channel closed when wg's count reaches zero.
func waitDone(wg *sync.WaitGroup) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

// fanOut runs fn(i) for i in [0, n), at most drainConcurrency at a time, and
// returns the errors joined. One failure does not stop the others: each is
// a round trip on its own connection.
func fanOut(n int, fn func(i int) error) error {
	errs := make([]error, n)
	var g errgroup.Group
	g.SetLimit(drainConcurrency)
	for i := range n {
		g.Go(func() error {
			errs[i] = fn(i)
			return nil
		})
	}
	g.Wait()
	return errors.Join(errs...)
}
