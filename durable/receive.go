package durable

import (
	"context"
	"fmt"
	"time"
	"unsafe"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/backoff"
)

const (
	// minSilence is the least time without a message from the server after
	// which the connection counts as dead (see receiver.silence).
	minSilence = 30 * time.Second

	// writeTimeout bounds one write of a status update or CopyDone: the
	// server reads them at once unless it is gone.
	writeTimeout = 15 * time.Second
)

// receiver is the goroutine that owns the stream's connection: it reads the
// replication stream into the queue, answers the server, sends status
// updates and reconnects. Its fields are its own; it shares state with the
// consumer only through the Stream's methods.
type receiver struct {
	s   *Stream
	ctx context.Context // cancelled by Close

	interval time.Duration // between status updates
	silence  time.Duration // without a message from the server: dead

	received  pglogrepl.LSN // highest position the server sent: reported as written
	sentFlush pglogrepl.LSN // last flush position sent
	seen      pglogrepl.LSN // end of the last transaction queued: a copy of it or of any before is a duplicate
	txn       *txn          // the transaction being read; nil between transactions

	bo       *backoff.Backoff // the reconnect backoff: Up when replication runs, Down when lost
	failures int              // attempts in the current reconnect, for the log
}

// txn collects one transaction's messages on the stream's channels.
type txn struct {
	commit pglogrepl.LSN
	reads  int // logical decoding messages read: a frame carries many notifications in one
	msgs   []*pgnotify.Notification
	size   int
	slab   []pgnotify.Notification // allocated ahead, growing with the transaction
	text   []byte                  // payload bytes allocated ahead, the same way
}

// add appends a notification. Its struct and its payload come from chunks
// that grow with the transaction: in a large one, two allocations per 64
// messages instead of two per message.
func (t *txn) add(channel string, payload []byte) {
	if len(t.slab) == 0 {
		t.slab = make([]pgnotify.Notification, min(slabMax, len(t.msgs)+1))
	}
	n := &t.slab[0]
	t.slab = t.slab[1:]
	n.Channel, n.Payload = channel, t.copyText(payload)
	t.msgs = append(t.msgs, n)
	t.size += len(payload)
}

// copyText returns b as a string backed by t.text. Bytes in t.text are
// written once and never again (a full chunk is replaced, not regrown), so
// the strings are as immutable as any.
func (t *txn) copyText(b []byte) string {
	if len(b) == 0 || len(b) > textMax/4 {
		return string(b)
	}
	if cap(t.text)-len(t.text) < len(b) {
		t.text = make([]byte, 0, min(textMax, len(b)*min(slabMax, len(t.msgs)+1)))
	}
	start := len(t.text)
	t.text = append(t.text, b...)
	return unsafe.String(&t.text[start], len(b))
}

// The chunks of a transaction's notifications: a batch's notifications
// share them, so keeping one keeps at most this much of its batch alive.
const (
	slabMax = 64   // notifications
	textMax = 4096 // payload bytes; a larger quarter has its own string
)

func newReceiver(ctx context.Context, s *Stream, st serverState) *receiver {
	r := &receiver{s: s, ctx: ctx, received: st.confirmed, sentFlush: st.confirmed,
		bo: backoff.New(s.cfg.backoffMin, s.cfg.backoffMax)}
	r.setTimers(st)
	return r
}

// setTimers derives the status interval from the option and the server's
// wal_sender_timeout: the server drops a client it has not heard from for
// that long, so a third of it leaves room for a late update.
func (r *receiver) setTimers(st serverState) {
	r.interval = r.s.cfg.statusInterval
	if st.walSenderTimeout > 0 {
		r.interval = min(r.interval, st.walSenderTimeout/3)
	}
	r.interval = max(r.interval, time.Millisecond)
	r.silence = max(3*r.interval, minSilence)
}

// run is the receiver goroutine: stream until the connection is lost, then
// yield Dead, reconnect and yield Recovered, until Close or a permanent
// error.
func (r *receiver) run(conn *pgconn.PgConn) {
	defer close(r.s.done)
	defer r.s.stop()
	r.bo.Up()
	for {
		err := r.stream(conn)
		if r.ctx.Err() != nil {
			r.s.finish(nil, r.goodbye(conn))
			return
		}
		r.closeLost(conn)
		r.log("durable: connection lost; reconnecting", "err", err)
		r.s.push(item{ev: pgnotify.Event{Kind: pgnotify.Dead, Err: err}})
		r.txn = nil
		r.bo.Down()
		conn, err = r.reconnect()
		if err != nil {
			if r.ctx.Err() != nil {
				r.s.finish(nil, r.unsentAck())
			} else {
				r.log("durable: stream ended", "err", err)
				r.s.finish(err, nil)
			}
			return
		}
		r.bo.Up()
		r.s.push(item{ev: pgnotify.Event{Kind: pgnotify.Recovered}})
	}
}

// stream reads conn until it fails or the receiver's context ends. Between
// reads it sends status updates on time, and acknowledgements when kickAck
// asks; while the queue is full it stops reading (TCP then holds the server
// back) but keeps sending them, so the server never drops a slow consumer,
// and probes whether the server is shutting down (see prober).
func (r *receiver) stream(conn *pgconn.PgConn) error {
	// Reads are bounded by a read deadline on the socket, not by a context:
	// pgconn watches a cancellable context with a goroutine per call, which
	// costs more than decoding a message. A timed-out read leaves the
	// connection usable (pgconn closes it on any other read error), and
	// Close and kickAck interrupt a read by moving the deadline to now.
	nc := conn.Conn()
	r.s.mu.Lock()
	r.s.nc = nc
	r.s.mu.Unlock()
	fired := make(chan struct{})
	stopWatch := context.AfterFunc(r.ctx, func() {
		_ = nc.SetReadDeadline(time.Now())
		close(fired)
	})
	probe := newProber(r.s.connCfg, conn)
	defer func() {
		probe.stop()
		// The goodbye reads this connection next: clear the deadline only
		// once neither Close's interruption nor kickAck can set it.
		r.s.mu.Lock()
		r.s.nc = nil
		r.s.mu.Unlock()
		if !stopWatch() {
			<-fired
		}
		_ = nc.SetReadDeadline(time.Time{})
	}()

	// One clock reading per message: now is when the last read returned,
	// or a fresher time after anything slow.
	now := time.Now()
	nextStatus := now.Add(r.interval)
	lastHeard := now
	deadline := time.Time{}
	mayBeFull := true       // the queue only grows here: check it again after a push
	var heldSince time.Time // when a full queue stopped the reads; zero once it is half empty
	var nextProbe time.Time // when to probe next while held back
	for {
		if !now.Before(nextStatus) {
			if now.Sub(lastHeard) > r.silence {
				return fmt.Errorf("durable: no message from the server for %v", now.Sub(lastHeard).Round(time.Second))
			}
			// Ask for a reply when the server has been quiet, so that
			// silence means a dead connection.
			if err := r.sendStatus(conn, now.Sub(lastHeard) >= r.interval, false); err != nil {
				return err
			}
			nextStatus = now.Add(r.interval)
		}
		if err := r.sendAckIfDue(conn); err != nil {
			return err
		}
		if mayBeFull || !heldSince.IsZero() {
			full, low := r.s.fill()
			if full {
				if heldSince.IsZero() {
					heldSince, nextProbe = now, now.Add(probeAfter)
				}
				if !now.Before(nextProbe) {
					probe.start(r.ctx)
					nextProbe = now.Add(probeEvery)
				}
				until := nextStatus
				if nextProbe.Before(until) {
					until = nextProbe
				}
				if err := r.waitSpace(until, probe); err != nil {
					return err
				}
				// Not reading is not silence.
				now = time.Now()
				lastHeard = now
				continue
			}
			if low {
				heldSince = time.Time{}
			}
			mayBeFull = false
		}
		if !deadline.Equal(nextStatus) {
			deadline = nextStatus
			_ = nc.SetReadDeadline(deadline)
		}
		// After setting the deadline: a Close or a kickAck before it has
		// set its own (now) already, and one after it is seen here.
		if err := r.ctx.Err(); err != nil {
			return err
		}
		if err := r.sendAckIfDue(conn); err != nil {
			return err
		}
		msg, err := conn.ReceiveMessage(context.Background())
		before := now
		now = time.Now()
		if err != nil {
			if pgconn.Timeout(err) && !conn.IsClosed() {
				deadline = time.Time{} // Close or kickAck may have moved it
				continue
			}
			return err
		}
		lastHeard = now
		if r.coalesce(now.Sub(before)) {
			now = time.Now()
		}
		pushed, err := r.handle(conn, msg)
		if err != nil {
			return err
		}
		mayBeFull = mayBeFull || pushed
	}
}

// sendAckIfDue sends a status update if kickAck asked for one.
func (r *receiver) sendAckIfDue(conn *pgconn.PgConn) error {
	if r.s.ackDue.Load() && r.s.ackDue.Swap(false) {
		return r.sendStatus(conn, false, false)
	}
	return nil
}

// Read coalescing. The walsender flushes every message on its own, so a
// stream that keeps up reads one small message per system call, and spends
// most of its CPU in the kernel waiting for the next. Inside a large
// transaction nothing can be delivered before its commit anyway: there, when
// a read had to wait, pausing briefly lets the socket fill, and the next
// reads take many messages at a time.
const (
	coalesceAfter = 16                    // logical decoding messages into a transaction
	coalesceWait  = 20 * time.Microsecond // a read that took this long waited for data
	coalescePause = time.Millisecond      // at most this much later delivery of a large transaction
)

// coalesce pauses after a read that waited inside a large transaction, and
// reports whether it did.
func (r *receiver) coalesce(took time.Duration) bool {
	if r.txn != nil && r.txn.reads >= coalesceAfter && took >= coalesceWait {
		time.Sleep(coalescePause)
		return true
	}
	return false
}

// waitSpace waits for the consumer to take something from a full queue, for
// an acknowledgement to send, for until, for the probe's outcome, or for
// Close. It returns an error if the probe found the server stopping.
func (r *receiver) waitSpace(until time.Time, probe *prober) error {
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-r.s.space:
	case <-r.s.ackWake:
	case <-t.C:
	case err := <-probe.result:
		return probe.done(err)
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	return nil
}

// handle processes one message of the replication stream.
func (r *receiver) handle(conn *pgconn.PgConn, msg pgproto3.BackendMessage) (pushed bool, err error) {
	switch msg := msg.(type) {
	case *pgproto3.CopyData:
		if len(msg.Data) == 0 {
			return false, errEmptyMessage
		}
		switch msg.Data[0] {
		case pglogrepl.PrimaryKeepaliveMessageByteID:
			ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
			if err != nil {
				return false, fmt.Errorf("durable: %w", err)
			}
			r.received = max(r.received, ka.ServerWALEnd)
			r.s.walEnd.Store(uint64(ka.ServerWALEnd))
			// Between transactions, everything before the server's
			// position has been sent: a transaction still running commits
			// later.
			if r.txn == nil {
				r.s.skipTo(ka.ServerWALEnd)
			}
			if ka.ReplyRequested {
				return false, r.sendStatus(conn, false, false)
			}
		case pglogrepl.XLogDataByteID:
			xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
			if err != nil {
				return false, fmt.Errorf("durable: %w", err)
			}
			r.received = max(r.received, xld.WALStart)
			r.s.walEnd.Store(uint64(xld.ServerWALEnd))
			return r.decode(xld.WALData)
		}
		return false, nil
	case *pgproto3.ErrorResponse:
		return false, pgconn.ErrorResponseToPgError(msg)
	case *pgproto3.CopyDone, *pgproto3.CommandComplete, *pgproto3.ReadyForQuery:
		return false, errServerEnded
	}
	// Notices and parameter changes.
	return false, nil
}

// decode reads one pgoutput message. Only transactions and logical decoding
// messages matter: the publication is empty, and other kinds are skipped.
func (r *receiver) decode(data []byte) (pushed bool, err error) {
	if len(data) == 0 {
		return false, errEmptyPgoutput
	}
	switch pglogrepl.MessageType(data[0]) {
	case pglogrepl.MessageTypeBegin:
		var m pglogrepl.BeginMessage
		if err := m.Decode(data[1:]); err != nil {
			return false, fmt.Errorf("durable: %w", err)
		}
		r.txn = &txn{commit: m.FinalLSN}
	case pglogrepl.MessageTypeMessage:
		transactional, msgPrefix, content, err := parseMessage(data[1:])
		if err != nil {
			return false, err
		}
		// Emit writes only transactional messages; others are not ours.
		if !transactional || r.txn == nil {
			return false, nil
		}
		r.txn.reads++
		if string(msgPrefix) == prefix {
			if err := r.s.unframe(r.txn, content); err != nil {
				return false, err
			}
		} else if ch, ok := r.s.channelOf(msgPrefix); ok {
			r.txn.add(ch, content)
		}
	case pglogrepl.MessageTypeCommit:
		var m pglogrepl.CommitMessage
		if err := m.Decode(data[1:]); err != nil {
			return false, fmt.Errorf("durable: %w", err)
		}
		t := r.txn
		r.txn = nil
		end := m.TransactionEndLSN
		// After a reconnect the server starts again from the last position
		// it saved, which may be older than what this stream has queued.
		if t == nil || len(t.msgs) == 0 || end <= r.seen {
			r.s.skipTo(end)
			return false, nil
		}
		r.seen = end
		r.s.push(item{
			ev:   pgnotify.Event{Kind: pgnotify.Batch, Notifications: t.msgs, LSN: uint64(t.commit)},
			end:  end,
			size: t.size,
		})
		return true, nil
	}
	return false, nil
}

// sendStatus sends a standby status update. It reports what was received as
// written, and a flush position only when the consumer's acknowledgement has
// advanced it (or final is set); otherwise the flush position is invalid (0).
// A stopping walsender waits until the client's flush position, or its write
// position when the flush position is invalid, reaches what it sent: this way
// a held batch never holds up a server shutdown. pglogrepl's
// SendStandbyStatusUpdate cannot send an invalid flush position (it replaces 0
// with the write position, which would acknowledge everything received), so
// the message is built here.
func (r *receiver) sendStatus(conn *pgconn.PgConn, replyRequested, final bool) error {
	acked := r.s.ackedPos()
	var flush pglogrepl.LSN
	if acked > r.sentFlush || final {
		flush = acked
	}
	msg := encodeStatus(max(r.received, acked), flush, time.Now(), replyRequested)
	if err := r.write(conn, msg); err != nil {
		return err
	}
	if flush != 0 {
		r.sentFlush = max(r.sentFlush, flush)
	}
	return nil
}

// write sends one encoded message, bounded by writeTimeout.
func (r *receiver) write(conn *pgconn.PgConn, msg []byte) error {
	nc := conn.Conn()
	_ = nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	err := conn.Frontend().SendUnbufferedEncodedCopyData(msg)
	_ = nc.SetWriteDeadline(time.Time{})
	if err != nil {
		// A failed or partial write leaves the protocol out of step.
		conn.Close(context.Background())
		return fmt.Errorf("durable: send status update: %w", err)
	}
	return nil
}

// goodbye ends replication on a live connection after Close: the final
// position, CopyDone, then the server's reply, which comes once it has
// released the slot. It runs under Close's ctx.
func (r *receiver) goodbye(conn *pgconn.PgConn) error {
	ctx := r.s.closeContext()
	defer func() {
		conn.Close(ctx)
		<-conn.CleanupDone()
	}()
	if conn.IsClosed() {
		return r.unsentAck()
	}
	if err := r.sendStatus(conn, false, true); err != nil {
		return err
	}
	copyDone, err := (&pgproto3.CopyDone{}).Encode(nil)
	if err != nil {
		return fmt.Errorf("durable: %w", err)
	}
	if err := r.write(conn, copyDone); err != nil {
		return err
	}
	// pglogrepl.SendStandbyCopyDone would wait without a context; read
	// the rest of the stream here until the server is ready for a command.
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			return fmt.Errorf("durable: end replication: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("durable: end replication: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.ReadyForQuery:
			return r.persist(ctx, conn)
		}
	}
}

// persist makes the server save the slot's confirmed position at its next
// checkpoint, a clean shutdown's included. A confirmation from a stream only
// changes the position in memory (until PostgreSQL 17, the shutdown
// checkpoint does not save it either), so without this a restart would
// deliver acknowledged batches again. pg_replication_slot_advance, even to
// the position the slot already has, marks the slot dirty once it has decoded
// from restart_lsn ("so it is written out at the next checkpoint", says its
// source); it needs the slot free, which it is now. A failure only means more
// batches may come again, so it is not Close's error.
func (r *receiver) persist(ctx context.Context, conn *pgconn.PgConn) error {
	sql := fmt.Sprintf("SELECT pg_replication_slot_advance('%s', confirmed_flush_lsn) FROM pg_replication_slots WHERE slot_name = '%s'",
		r.s.slot, r.s.slot)
	if _, err := conn.Exec(ctx, sql).ReadAll(); err != nil {
		r.log("durable: could not mark the slot's position for saving", "err", err)
	}
	return nil
}

// unsentAck reports an acknowledgement that never reached the server.
func (r *receiver) unsentAck() error {
	if r.s.ackedPos() > r.sentFlush {
		return errUnsentAck
	}
	return nil
}

// closeLost closes a lost connection and waits for pgconn's cleanup, so no
// goroutine outlives the stream.
func (r *receiver) closeLost(conn *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	conn.Close(ctx)
	<-conn.CleanupDone()
}

// reconnect dials until replication runs again, waiting the backoff's
// delay before each attempt. It gives up on a permanent error and on Close.
func (r *receiver) reconnect() (*pgconn.PgConn, error) {
	for r.failures = 1; ; r.failures++ {
		t := time.NewTimer(r.bo.Next())
		select {
		case <-t.C:
		case <-r.ctx.Done():
			t.Stop()
			return nil, r.ctx.Err()
		}
		// From the consumer's position: the server's own may be older if
		// the last status update was lost with the connection.
		conn, st, err := r.s.start(r.ctx, r.s.ackedPos())
		if err == nil {
			r.setTimers(st)
			r.sentFlush = 0
			return conn, nil
		}
		if r.ctx.Err() != nil {
			return nil, r.ctx.Err()
		}
		// An old walsender may still hold the slot (ErrSlotInUse): retry.
		if permanent(err) {
			return nil, err
		}
		r.log("durable: reconnect failed", "attempt", r.failures, "err", err)
	}
}

func (r *receiver) log(msg string, args ...any) {
	if l := r.s.cfg.logger; l != nil {
		l.Warn(msg, append([]any{"slot", r.s.slot}, args...)...)
	}
}
