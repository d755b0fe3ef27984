package pgnotify

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// step is what the waiter does next, chosen under mb.mu by waiter.next.
type step uint8

const (
	stepRead  step = iota // wait in pgx for the next notification
	stepStop              // Remove or Close: return
	stepServe             // a request: a Do's hand-over or a drain pass's round trip
	stepPark              // pending is full: wait for the consumer
	stepPing              // a quiet connection's health check is due
	stepArm               // move the read deadline to the next health check
)

// waiter is the state of a member's waiter goroutine, the only goroutine
// that uses the connection (except a Do function it is lent to, or the
// consumer it lends one read to). Nothing here is shared.
type waiter struct {
	mb       *member
	b        burst     // read since the last publish (burst.go)
	armed    time.Time // read deadline in force; zero: none
	healthAt time.Time // when a quiet connection is pinged
	traffic  bool      // something arrived since healthAt was set
	pingDue  bool
	loan     *loan // reused for every read lent to the consumer
}

// run is the waiter: it publishes what it read, takes the next step, and
// returns when the member stops or dies.
func (mb *member) run() {
	defer close(mb.exited)
	wt := &waiter{mb: mb, b: burst{bound: mb.cfg.maxPending}}
	wt.quiet()
	for {
		step, req := wt.next()
		switch step {
		case stepStop:
			mb.exit(nil, nil)
			return
		case stepServe:
			wt.setDeadline(time.Time{})
			if !mb.serve(req) {
				return
			}
			wt.quiet()
		case stepPark:
			// Not quiet: it waits for the consumer, so no ping (a ping
			// would pull the whole backlog into memory).
			<-mb.wake
			wt.quiet()
		case stepPing:
			mb.stats.pings.Add(1)
			wt.setDeadline(time.Time{})
			if !mb.healthCheck() {
				return
			}
			wt.quiet()
		case stepArm:
			wt.setDeadline(wt.healthAt)
		case stepRead:
			if err := wt.read(); err != nil {
				// pgconn closes the connection on every read error but a
				// timeout (peekMessage), including the server's FATAL
				// ErrorResponse; close it for anything pgx left open, so
				// a member is never live with an unknown protocol state.
				mb.closeConn()
				mb.exit(err, wt.b.ns)
				return
			}
		}
	}
}

// next publishes the burst read since the last call and chooses the next
// step, under mb.mu, setting what the member is doing to match.
func (wt *waiter) next() (step, *request) {
	mb := wt.mb
	mb.mu.Lock()
	push, whole := false, false
	if len(wt.b.ns) > 0 {
		whole, push = mb.offerLocked(wt.b.ns, wt.b.size)
		wt.traffic = true
	}
	wt.b.setRoom(mb.cfg.maxPending-len(mb.pending), mb.cfg.maxBytes-mb.pendingBytes)
	mb.doing = doingOwn
	if mb.deadlineMoved {
		// Moved maybe after the read had already returned: armed no
		// longer says what is in force.
		mb.deadlineMoved = false
		wt.armed = pastDeadline
	}
	s, req := stepRead, (*request)(nil)
	switch {
	case mb.state != stateLive:
		s = stepStop
	case len(mb.reqs) > 0:
		s, req = stepServe, mb.reqs[0]
		mb.reqs[0] = nil
		mb.reqs = mb.reqs[1:]
		if req.kind == reqHandover {
			mb.doing = doingLend
		}
	case wt.b.room <= 0 || wt.b.byteRoom <= 0:
		s = stepPark
	case wt.pingDue:
		s = stepPing
	case !wt.armed.Equal(wt.healthAt):
		s = stepArm
	default:
		mb.doing = doingRead
	}
	mb.mu.Unlock()
	if push {
		mb.own.pushReady(mb, true)
	}
	wt.b.handOver(whole)
	return s, req
}

// quiet starts a new health-check interval.
func (wt *waiter) quiet() {
	wt.traffic, wt.pingDue = false, false
	if every := wt.mb.cfg.healthEvery; every > 0 {
		wt.healthAt = time.Now().Add(every)
	}
}

// setDeadline moves the read deadline to t unless it is there already.
func (wt *waiter) setDeadline(t time.Time) {
	if !wt.armed.Equal(t) {
		wt.mb.netConn.SetReadDeadline(t)
		wt.armed = t
	}
}

// read waits in pgx for the next notification, then takes the burst that
// pgx's buffer already holds behind it. A timeout (an interrupt or the
// health deadline) is not an error; it returns any other read error.
func (wt *waiter) read() error {
	mb := wt.mb
	n, err := mb.conn.WaitForNotification(context.Background())
	if n == nil && err == nil {
		// A notification arrived and went to the config's OnNotification
		// instead of pgx's buffer: deaf, so dead.
		err = errNotHeard
	}
	if n != nil {
		wt.b.add(n)
		if err == nil && wt.b.hasRoom() && mb.conn.PgConn().Frontend().ReadBufferLen() > 0 {
			wt.armed = pastDeadline
			err = wt.takeBurst()
		}
	}
	if err == nil {
		return nil
	}
	if pgconn.Timeout(err) && !mb.conn.IsClosed() {
		wt.armed = pastDeadline
		if mb.cfg.healthEvery > 0 && !time.Now().Before(wt.healthAt) {
			if wt.traffic {
				wt.quiet()
			} else {
				wt.pingDue = true
			}
		}
		return nil
	}
	return err
}

// takeBurst reads the rest of the burst: on the consumer's goroutine when
// it is waiting in Next (see loan), here otherwise.
func (wt *waiter) takeBurst() error {
	if wt.loan == nil {
		wt.loan = &loan{mb: wt.mb, b: &wt.b, back: make(chan error, 1)}
	}
	if !wt.mb.own.offerLoan(wt.loan) {
		return wt.b.read(wt.mb.conn, 0)
	}
	err := <-wt.loan.back
	// The consumer published the burst and handed it back empty.
	wt.traffic = true
	return err
}

// serve performs one request and reports whether the member is still live.
func (mb *member) serve(r *request) bool {
	if !r.take() {
		return true // withdrawn: its caller stopped waiting
	}
	if r.kind == reqRoundTrip {
		live := mb.roundTrip()
		r.done <- nil
		return live
	}
	r.done <- nil
	fnErr := <-r.released
	var afterErr error
	if !mb.conn.IsClosed() {
		if s := mb.conn.PgConn().TxStatus(); s != 'I' {
			afterErr = mb.rollback(s)
		}
	}
	mb.publishBuffered()
	live := !mb.conn.IsClosed()
	if !live {
		mb.exit(cmp.Or(fnErr, afterErr, errClosedInDo), nil)
	}
	r.done <- afterErr
	return live
}

// roundTrip pings the server on a fresh context with its own timeout (for
// a drain pass; a health check is healthCheck) and reports whether the
// connection survived. The server sends every
// notification committed before the ping ahead of its ReadyForQuery, so
// after it pgx's buffer holds all of them; they are published before a
// death is.
func (mb *member) roundTrip() bool {
	ctx, cancel := context.WithTimeout(context.Background(), mb.cfg.roundTripTimeout())
	err := mb.conn.PgConn().Ping(ctx)
	cancel()
	mb.publishBuffered()
	if err == nil && !mb.conn.IsClosed() {
		return true
	}
	if err == nil {
		err = errClosedInPing
	}
	mb.closeConn()
	mb.exit(err, nil)
	return false
}

// rollback ends the transaction a Do function left open (status s), which
// would keep the member deaf: a session in a transaction receives no
// notification until it ends, while health pings still pass. It returns the
// error Do reports; if the ROLLBACK fails the connection is closed, and the
// member dies of that error.
func (mb *member) rollback(s byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), mb.cfg.roundTripTimeout())
	defer cancel()
	if _, err := mb.conn.PgConn().Exec(ctx, "ROLLBACK").ReadAll(); err != nil {
		mb.closeConn()
		return fmt.Errorf("%w (status %q), and the ROLLBACK failed: %w", errTxLeftOpen, s, err)
	}
	return fmt.Errorf("%w (status %q); it was rolled back", errTxLeftOpen, s)
}

// closeConn closes a connection the waiter owns, without waiting on a dead
// peer for long.
func (mb *member) closeConn() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	mb.conn.Close(ctx)
	cancel()
}
