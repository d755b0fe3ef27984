package pgnotify

import (
	"context"
	"iter"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Wait returns an iterator over the notifications conn receives, for a
// single connection without a [Manager]. It reads in the goroutine that
// ranges over it and starts none of its own, so the loop body may use conn
// (run a query, [Listen] on another channel) between iterations; nothing else
// may use conn while the iterator is reading. Notifications come in the
// order the server sent them, including those pgx had already buffered on
// conn from earlier queries.
//
// conn must keep pgx's default notification handling, which buffers them
// in conn. A config from another connection's Config() carries that
// connection's buffer in OnNotification: set it to nil in the copy before
// connecting, or conn's notifications go to the other connection. When a
// notification arrives and goes to an OnNotification instead, Wait yields
// an error saying so and ends, leaving conn open (the round trip of a zero
// timeout cannot tell).
//
// timeout says what happens when nothing arrives:
//
//   - [NoTimeout] (any negative value): each step blocks until a
//     notification arrives, ctx ends, or the connection is lost.
//   - > 0: if no notification arrives within timeout of the step's start,
//     Wait yields (nil, nil), an idle tick, and carries on. conn stays open
//     and usable in the loop body.
//   - 0: Wait yields every notification committed before the call on the
//     channels conn listens on, then ends. It takes what pgx has buffered and
//     makes one round trip, because the server sends pending notifications
//     before it reports ready for the next query. conn should be idle (not in
//     a transaction): the server holds notifications back until then.
//
// The iterator is a single-use stream and an error comes once, last: when
// ctx ends, Wait yields ctx.Err() and stops, leaving conn open and any
// buffered notifications in it (an interrupted wait does not close a pgx
// connection; the round trip of a zero timeout, like any pgx query, does).
// When the connection is lost, Wait first yields the notifications pgx had
// already received, then the error that ended it; the server's
// *pgconn.PgError (57P01 for pg_terminate_backend) stays reachable with
// [errors.As]. If the loop body breaks, Wait returns at once and leaves
// nothing running.
func Wait(ctx context.Context, conn *pgx.Conn, timeout time.Duration) iter.Seq2[*Notification, error] {
	return func(yield func(*Notification, error) bool) {
		if conn == nil {
			yield(nil, errNilConn)
			return
		}
		if err := ctx.Err(); err != nil {
			yield(nil, err)
			return
		}
		if timeout == 0 {
			waitPending(ctx, conn, yield)
			return
		}
		r := newSocketReader(ctx, conn)
		defer r.close()
		for {
			if err := ctx.Err(); err != nil {
				yield(nil, err)
				return
			}
			n, idle, err := r.next(ctx, timeout)
			switch {
			case n != nil:
				if !yield(n, nil) {
					return
				}
			case idle:
				if !yield(nil, nil) {
					return
				}
				continue
			}
			if err == nil {
				continue
			}
			if ctxErr := ctx.Err(); ctxErr != nil {
				yield(nil, ctxErr)
				return
			}
			if conn.IsClosed() && !yieldBuffered(conn, yield) {
				return
			}
			yield(nil, err)
			return
		}
	}
}

// socketReader reads notifications with context.Background(), so pgx sets up
// no context watcher (and makes no allocation) per read, and ends a read
// through the socket's read deadline instead: for the idle timeout, and for
// ctx's end through one context.AfterFunc for the whole iteration. The
// deadline is only ever moved while the reader is inside its read, never
// while the loop body is using conn, whose queries it would break.
type socketReader struct {
	conn *pgx.Conn
	nc   net.Conn
	stop func() bool // ends the AfterFunc; nil when ctx can't end

	mu      sync.Mutex
	reading bool // inside WaitForNotification
	// moved says ctx's end moved the deadline during the read. The read
	// may still return a notification (one pgx had buffered, or data that
	// arrived as the deadline moved), so the deadline must be cleared
	// after it whatever it returned.
	moved bool
}

func newSocketReader(ctx context.Context, conn *pgx.Conn) *socketReader {
	r := &socketReader{conn: conn, nc: conn.PgConn().Conn()}
	if ctx.Done() != nil {
		// The callback runs in a goroutine of the context package's, only
		// once ctx ends.
		r.stop = context.AfterFunc(ctx, func() {
			r.mu.Lock()
			if r.reading {
				r.nc.SetReadDeadline(pastDeadline)
				r.moved = true
			}
			r.mu.Unlock()
		})
	}
	return r
}

func (r *socketReader) close() {
	if r.stop != nil {
		r.stop()
	}
}

// next waits for one notification (pgx returns one it already buffered
// first). idle reports that timeout (> 0) passed with conn still open and
// ctx not done; err is then nil.
func (r *socketReader) next(ctx context.Context, timeout time.Duration) (n *Notification, idle bool, err error) {
	var deadline time.Time
	r.mu.Lock()
	if err := ctx.Err(); err != nil {
		r.mu.Unlock()
		return nil, false, err
	}
	r.reading = true
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
		r.nc.SetReadDeadline(deadline)
	}
	r.mu.Unlock()

	n, err = r.conn.WaitForNotification(context.Background())

	r.mu.Lock()
	r.reading = false
	moved := r.moved
	r.moved = false
	r.mu.Unlock()
	timedOut := err != nil && pgconn.Timeout(err) && !r.conn.IsClosed()
	if timedOut || moved || !deadline.IsZero() {
		// The loop body may use conn next: leave no deadline of ours on it.
		// Once reading is false the AfterFunc no longer moves it.
		r.nc.SetReadDeadline(time.Time{})
	}
	if !timedOut {
		if n == nil && err == nil {
			// A notification arrived and went to the config's
			// OnNotification instead of pgx's buffer.
			err = errNotHeard
		}
		return n, false, err
	}
	// pgconn keeps the connection open on a read timeout (and a half-read
	// message for the next read): this was our deadline, not a failure.
	switch {
	case n != nil:
		return n, false, nil
	case ctx.Err() != nil:
		return nil, false, ctx.Err()
	case !deadline.IsZero() && !time.Now().Before(deadline):
		return nil, true, nil
	}
	return nil, false, nil
}

// waitPending yields every notification committed before the call: those
// pgx has buffered, then those the server sends ahead of the ReadyForQuery
// of one round trip.
func waitPending(ctx context.Context, conn *pgx.Conn, yield func(*Notification, error) bool) {
	if !yieldBuffered(conn, yield) {
		return
	}
	if err := ctx.Err(); err != nil {
		yield(nil, err)
		return
	}
	// PostgreSQL delivers the notifications pending for an idle session
	// before it sends ReadyForQuery, so once the ping returns, pgx holds
	// every notification committed before it was sent (py-postgresql #59:
	// a zero-timeout wait that never reads the socket misses them).
	err := conn.PgConn().Ping(ctx)
	if !yieldBuffered(conn, yield) {
		return
	}
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		yield(nil, err)
	}
}

// yieldBuffered yields the notifications pgx has already received on conn,
// without I/O: given a context that is already done, WaitForNotification
// returns a buffered notification, or an error once none is left. It reports
// false if yield did.
func yieldBuffered(conn *pgx.Conn, yield func(*Notification, error) bool) bool {
	for {
		n, _ := conn.WaitForNotification(cancelledCtx)
		if n == nil {
			return true
		}
		if !yield(n, nil) {
			return false
		}
	}
}
