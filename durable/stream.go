package durable

import (
	"context"
	"fmt"
	"iter"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/seed-c59d106d/pgnotify"
)

// A Stream reads the messages of some channels from one replication slot, at
// least once, in commit order. [Open] starts it; [Stream.Next] returns one
// event at a time.
//
// Next and Events are the consumer's: call them from one goroutine at a time.
// Close is safe from any goroutine, also while Next is blocked. The stream
// owns its connection and a goroutine that reads it, answers the server and
// reconnects; Close stops both.
type Stream struct {
	slot     string
	channels map[string]string // each to itself: decoded names are looked up, not allocated
	cfg      config
	connCfg  *pgconn.Config

	wake    chan struct{}      // cap 1: the queue grew or the receiver ended; Next waits on it
	space   chan struct{}      // cap 1: the queue shrank; a receiver held back by a full queue waits on it
	ackWake chan struct{}      // cap 1: kickAck ran; a receiver held back by a full queue waits on it
	closing chan struct{}      // closed by Close: a blocked Next returns ErrClosed
	stop    context.CancelFunc // cancels the receiver's context; called by Close
	done    chan struct{}      // closed when the receiver goroutine has returned

	ackDue atomic.Bool   // set by kickAck: the receiver sends the acknowledged position now
	walEnd atomic.Uint64 // the server's WAL end, from its last message; written by the receiver

	mu           sync.Mutex      // guards the fields below
	queue        []item          // events for Next, in order
	pendingBytes int             // payload bytes in queue
	inNext       bool            // a goroutine is in Next
	out          []handed        // batches Next returned that the slot has not passed, in order
	passed       uint64          // Event.LSN of the last batch the slot passed (removed from out)
	acked        pglogrepl.LSN   // what the server may forget: the flush position to report
	ackScheduled bool            // ackTimer will run kickAck
	ackTimer     *time.Timer     // runs kickAck ackDelay after an acknowledgement; nil until the first
	nc           net.Conn        // the receiver's socket while it streams, for kickAck; nil otherwise
	end          error           // the permanent error the receiver ended with, after the queue
	closed       bool            // Close was called
	closeCtx     context.Context // Close's ctx, for the receiver's goodbye; set before stop is called
	closeErr     error           // the receiver's goodbye result, for Close

	batches, messages, reconnects uint64 // for Stats
}

// item is one event in the queue.
type item struct {
	ev   pgnotify.Event
	end  pglogrepl.LSN // Batch: the end of its transaction, confirmed once the batch is acknowledged
	skip pglogrepl.LSN // a later position (skipped transactions, keepalives) confirmed along with this item
	size int           // payload bytes
}

// Open starts reading slot: it connects (adding replication=database to
// connString), checks the server, and starts replication before it returns,
// so its errors are Open's: [ErrWalLevel], [ErrNoReplication],
// [ErrSlotMissing] (Open never creates a slot: see [CreateSlot]),
// [ErrSlotInvalidated], [ErrSlotInUse], or the connection's error. Every
// channel is checked with [pgnotify.ValidateChannel] before anything is sent;
// at least one is needed. Messages on other channels are skipped, and
// confirmed along with the rest so that the slot advances. ctx bounds Open
// only; the stream runs until [Stream.Close].
//
// The stream starts after the last batch acknowledged on this slot (by any
// stream), and delivers every batch committed after that on its channels, at
// least once: see [Stream.Next].
func Open(ctx context.Context, connString, slot string, channels []string, opts ...Option) (*Stream, error) {
	if err := checkSlotName(slot); err != nil {
		return nil, err
	}
	if len(channels) == 0 {
		return nil, errNoChannels
	}
	set := make(map[string]string, len(channels))
	for _, ch := range channels {
		if err := pgnotify.ValidateChannel(ch); err != nil {
			return nil, err
		}
		set[ch] = ch
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	connCfg, err := replicationConfig(connString)
	if err != nil {
		return nil, err
	}
	s := &Stream{
		slot:     slot,
		channels: set,
		cfg:      cfg,
		connCfg:  connCfg,
		wake:     make(chan struct{}, 1),
		space:    make(chan struct{}, 1),
		ackWake:  make(chan struct{}, 1),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
	}
	conn, st, err := s.start(ctx, 0)
	if err != nil {
		return nil, err
	}
	s.acked = st.confirmed
	rctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	r := newReceiver(rctx, s, st)
	go r.run(conn)
	return s, nil
}

// start connects, checks and starts replication from the slot's confirmed
// position, or from from if it is later. On error it leaves no connection.
func (s *Stream) start(ctx context.Context, from pglogrepl.LSN) (*pgconn.PgConn, serverState, error) {
	conn, err := connectReplication(ctx, s.connCfg)
	if err != nil {
		return nil, serverState{}, err
	}
	st, err := readState(ctx, conn, s.slot)
	if err == nil {
		err = st.checkStream(s.slot)
	}
	if err == nil {
		err = pglogrepl.StartReplication(ctx, conn, s.slot, from, pglogrepl.StartReplicationOptions{
			Mode: pglogrepl.LogicalReplication,
			// proto_version 1: messages need no streaming of large
			// transactions, which would hand out uncommitted messages.
			PluginArgs: []string{"proto_version '1'", "publication_names '" + Publication + "'", "messages 'true'"},
		})
		if err != nil {
			if typed := slotErr(s.slot, err); typed != nil {
				err = typed
			} else {
				err = fmt.Errorf("durable: start replication on slot %q: %w", s.slot, err)
			}
		}
	}
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, serverState{}, err
	}
	return conn, st, nil
}

// Next returns the next event:
//
//   - Batch: one committed transaction's messages on the stream's channels,
//     in order, as Notifications (Channel, Payload; PID is 0); LSN is the
//     transaction's commit LSN, the same when the batch comes again.
//     Transactions come in commit order; one without messages on these
//     channels yields nothing.
//   - Dead: the connection was lost (Err says why; the server's
//     *pgconn.PgError where there was one). The stream reconnects by itself.
//   - Recovered: replication runs again on a new connection. Nothing was lost
//     in between: what was committed meanwhile comes next.
//
// Conn and Replaced are nil in every event; the slices and the Notifications
// belong to the caller. A batch's notifications are allocated together, so
// keeping one keeps a few KiB of its batch alive.
//
// Calling Next acknowledges the batch it returned last: that batch and all
// before it may now be forgotten by the server. The acknowledgement reaches
// the server within about 20 ms (several are sent together), and before Close
// returns. Until then a batch is not acknowledged: a consumer killed while it
// handles a batch gets that batch again from the next stream on the slot, and
// one killed just after asking for the next batch may get the previous one
// again too. With [WithManualAck], Next acknowledges nothing: see
// [Stream.Ack]. A stream never yields the same batch twice, but a new stream
// on the slot may yield batches that were acknowledged before a server crash
// or restart: the server saves confirmed positions lazily (see the package
// doc). Use LSN to recognise them.
//
// Next is the consumer's: a second goroutine calling it while one is inside
// gets an error at once (never an acknowledgement of a batch the other still
// handles); to handle batches in parallel, use WithManualAck.
//
// Next blocks until an event, ctx is done (it then returns ctx's error), or
// Close. After Close it returns [pgnotify.ErrClosed]. If the slot is dropped
// or invalidated while the stream reconnects, or the server stops allowing
// logical replication, or the publication is dropped, Next returns the
// pending events and then that typed error ([ErrSlotMissing],
// [ErrSlotInvalidated], [ErrWalLevel], [ErrNoReplication],
// [ErrPublicationMissing]) for good.
func (s *Stream) Next(ctx context.Context) (pgnotify.Event, error) {
	s.mu.Lock()
	if s.inNext {
		s.mu.Unlock()
		return pgnotify.Event{}, errConcurrentNext
	}
	s.inNext = true
	for {
		// s.mu is held here.
		if s.closed {
			return s.leaveNext(pgnotify.Event{}, pgnotify.ErrClosed)
		}
		if !s.cfg.manualAck {
			s.ackAll()
		}
		if len(s.queue) > 0 {
			it := s.queue[0]
			s.queue[0] = item{}
			s.queue = s.queue[1:]
			s.pendingBytes -= it.size
			if it.ev.Kind == pgnotify.Batch {
				s.hand(&it)
			} else {
				s.skipAfter(it.skip)
			}
			ev, err := s.leaveNext(it.ev, nil)
			signal(s.space)
			return ev, err
		}
		if s.end != nil {
			return s.leaveNext(pgnotify.Event{}, s.end)
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-s.closing:
		case <-ctx.Done():
			s.mu.Lock()
			return s.leaveNext(pgnotify.Event{}, ctx.Err())
		}
		s.mu.Lock()
	}
}

// leaveNext marks Next as left, unlocks s.mu and returns its arguments.
func (s *Stream) leaveNext(ev pgnotify.Event, err error) (pgnotify.Event, error) {
	s.inNext = false
	s.mu.Unlock()
	return ev, err
}

// Events returns an iterator over [Stream.Next]'s events. It is a
// single-use stream: ranging over it twice continues where the first loop
// stopped. Any error, [pgnotify.ErrClosed] and ctx's included, is yielded once,
// last. The batch the loop body saw last stays unacknowledged until the next
// Next or Close.
func (s *Stream) Events(ctx context.Context) iter.Seq2[pgnotify.Event, error] {
	return func(yield func(pgnotify.Event, error) bool) {
		for {
			ev, err := s.Next(ctx)
			if err != nil {
				yield(pgnotify.Event{}, err)
				return
			}
			if !yield(ev, nil) {
				return
			}
		}
	}
}

// Close acknowledges the batch Next returned last (with [WithManualAck],
// only what Ack acknowledged: the rest comes again), sends the server the
// final position, ends replication and closes the connection, returning once
// the server has released the slot (a new stream may then open it). It is
// safe from any goroutine, also while Next is blocked (Next then returns
// [pgnotify.ErrClosed]). If ctx ends first, the connection is closed at once
// and Close returns ctx's error; the slot is released when the server notices.
// If the stream was reconnecting, the last acknowledgements may not have
// reached the server (Close says so): those batches come again on the next
// Open. Close also asks the server to save the slot's position at its next
// checkpoint (see the package doc); the server decodes the WAL the slot
// retains to do so, which ctx bounds. Later calls return nil.
func (s *Stream) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	if !s.cfg.manualAck {
		s.ackAll()
	}
	s.closed = true
	if s.ackTimer != nil {
		s.ackTimer.Stop()
	}
	s.closeCtx = ctx
	s.mu.Unlock()
	close(s.closing)
	s.stop()
	// The receiver's goodbye runs under ctx, so this wait ends soon after ctx
	// does.
	<-s.done
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeErr
}

// push queues an event for Next.
func (s *Stream) push(it item) {
	s.mu.Lock()
	s.queue = append(s.queue, it)
	s.pendingBytes += it.size
	switch it.ev.Kind {
	case pgnotify.Batch:
		s.batches++
		s.messages += uint64(len(it.ev.Notifications))
	case pgnotify.Recovered:
		s.reconnects++
	}
	s.mu.Unlock()
	signal(s.wake)
}

// skipTo records that everything up to pos is delivered or skipped: it is
// confirmed with the last event not yet acknowledged (queued or handed out),
// or at once if there is none.
func (s *Stream) skipTo(pos pglogrepl.LSN) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.queue); n > 0 {
		s.queue[n-1].skip = max(s.queue[n-1].skip, pos)
		return
	}
	s.skipAfter(pos)
}

// ackedPos returns the position the server may forget.
func (s *Stream) ackedPos() pglogrepl.LSN {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked
}

// fill reports whether the receiver should stop reading until Next takes
// something (full: TCP then holds the server back; one batch is always let
// in, however large), and whether the queue is at most half full (low).
func (s *Stream) fill() (full, low bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	full = len(s.queue) > 0 &&
		(len(s.queue) >= s.cfg.maxPendingItems || s.pendingBytes >= s.cfg.maxPendingBytes)
	low = len(s.queue) <= s.cfg.maxPendingItems/2 && s.pendingBytes <= s.cfg.maxPendingBytes/2
	return full, low
}

// finish records the receiver's end: a permanent error (for Next, after the
// queue) or the goodbye's result (for Close).
func (s *Stream) finish(end, closeErr error) {
	s.mu.Lock()
	s.end = end
	s.closeErr = closeErr
	s.mu.Unlock()
	signal(s.wake)
}

// closeContext returns Close's ctx once Close has been called.
func (s *Stream) closeContext() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeCtx
}

// signal wakes the waiter on c, if any, without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
