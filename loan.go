package pgnotify

import (
	"context"
	"time"
)

// A loan lends one read of a member's connection to the consumer while it
// waits in Next, so that a burst is decoded on the goroutine (and so the
// core) that consumes it. Decoding on the waiter's core and consuming on
// another is what made the Manager slower than one goroutine reading pgx
// (BENCHMARKS.md, "Where the time goes").
//
// The hand-over is Do's, made cheap:
//
//	waiter: reads one notification; pgx's buffer holds more
//	waiter: offers the loan on m.loans without blocking; taken only if the
//	        consumer is parked in Next's select right now
//	waiter: waits on back, doing nothing with the connection
//	consumer: reads the burst on the connection, publishes it, sends the
//	          read's error on back; while notifications stream in it
//	          reads on across pgx's buffer refills (see loanLinger), so a
//	          backlog is decoded in bursts of up to the pending bound, one
//	          hand-over each
//	waiter: owns the connection again; a read error is its death as usual
//
// The consumer does bounded work (at most the pending bound, and two
// loanLinger waits past the stream's end) between taking the loan
// and answering, so the waiter never waits long, and the member's requests
// (Do, Remove, Close) find it at the top of its loop soon after. A read
// error is handed back, never acted on by the consumer: only the waiter
// closes the connection or makes the member die.
type loan struct {
	mb   *member
	b    *burst     // the waiter's: the consumer's from the offer until it sends on back
	back chan error // cap 1: the connection is the waiter's again
}

// offerLoan offers l to a consumer parked in Next at this moment, without
// waiting, and reports whether one took it.
func (m *Manager) offerLoan(l *loan) bool {
	select {
	case m.loans <- l:
		return true
	default:
		return false
	}
}

// decode is the consumer's side of a loan. It returns how many
// notifications it published.
func (l *loan) decode() int {
	err := l.b.read(l.mb.conn, loanLinger)
	n := len(l.b.ns)
	// The consumer is the caller: no wake-up.
	whole := l.mb.publish(l.b.ns, l.b.size, false)
	l.b.handOver(whole)
	l.back <- err
	return n
}

// A loan's burst goes on across pgx's buffer refills only while the
// notifications stream in: lingerBytes (in sizeOf's measure, about a third
// of pgx's 8 KiB read buffer on the wire) read since the deadline was last
// set. Then the deadline moves loanLinger ahead. A few notifications at a
// time never linger: Go's poller may take a millisecond to fire so short
// a deadline (epoll waits in milliseconds), which would show in latency.
// At the end of a stream the burst is held back at most two such waits.
const (
	loanLinger  = 50 * time.Microsecond
	lingerBytes = 4096
)

// testSignal is a test seam that costs nothing in production, after
// River's testsignal: nil and inert unless a test makes it, then each
// signal is a value the test can wait for (dropped if nobody keeps up).
type testSignal chan int

func (s testSignal) signal(v int) {
	if s != nil {
		select {
		case s <- v:
		default:
		}
	}
}

// testSignals are the Manager's test seams.
type testSignals struct {
	loaned testSignal // a loan was decoded: how many notifications it published

	// clock and wait put the reconnect backoff on a test's simulated
	// time: clock is the backoff's clock (how long a connection lived),
	// and wait replaces the timer between attempts.
	clock func() time.Time
	wait  func(ctx context.Context, d time.Duration) error
}

// sleep waits d before a reconnect attempt, or until ctx ends (it returns
// ctx's error); a test's wait replaces it.
func (s *testSignals) sleep(ctx context.Context, d time.Duration) error {
	if s.wait != nil {
		return s.wait(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
