package pgnotifytest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
)

func TestWaitInGoroutine(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	listener, notifier := connect(t), connect(t)
	require.NoError(t, pgnotify.Listen(ctx, listener, "goroutine"))

	const count = 100
	type result struct {
		payloads []string
		err      error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		for n, err := range pgnotify.Wait(ctx, listener, pgnotify.NoTimeout) {
			if err != nil {
				r.err = err
				break
			}
			r.payloads = append(r.payloads, n.Payload)
			if len(r.payloads) == count {
				break
			}
		}
		done <- r
	}()

	var want []string
	for i := range count {
		p := fmt.Sprint(i)
		want = append(want, p)
		require.NoError(t, pgnotify.Notify(ctx, notifier, pgnotify.Message{Channel: "goroutine", Payload: p}))
	}
	select {
	case r := <-done:
		require.NoError(t, r.err)
		assert.Equal(t, want, r.payloads)
	case <-ctx.Done():
		r := <-done // ctx ends the Wait too; let it finish with listener
		t.Fatalf("timed out after %d notifications (err %v)", len(r.payloads), r.err)
	}
}

func TestWaitBackgroundContext(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	listener, notifier := connect(t), connect(t)
	require.NoError(t, pgnotify.Listen(ctx, listener, "background"))
	require.NoError(t, pgnotify.Notify(ctx, notifier,
		pgnotify.Message{Channel: "background", Payload: "1"},
		pgnotify.Message{Channel: "background", Payload: "2"}))

	// Both notifications were committed before the wait starts, so a
	// blocking wait with no context watcher returns. Nothing can cancel
	// it: if it hangs, the test closes the socket under it and fails.
	var got []string
	var werr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n, err := range pgnotify.Wait(context.Background(), listener, pgnotify.NoTimeout) {
			if err != nil {
				werr = err
				return
			}
			got = append(got, n.Payload)
			if len(got) == 2 {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(receiveTimeout):
		listener.PgConn().Conn().Close()
		<-done
		t.Fatalf("Wait with context.Background() had %v of two committed notifications after %v", got, receiveTimeout)
	}
	require.NoError(t, werr)
	assert.Equal(t, []string{"1", "2"}, got)
}

// TestWaitZeroTimeoutSeesCommitted is py-postgresql issue #59: a zero
// timeout must return what another session committed before the call, even
// when the listener ran no query in between.
func TestWaitZeroTimeoutSeesCommitted(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	listener, notifier := connect(t), connect(t)
	require.NoError(t, pgnotify.Listen(ctx, listener, "committed"))

	assert.Empty(t, drain(ctx, t, listener), "nothing pending: ends at once")

	for i := range 50 {
		m := pgnotify.Message{Channel: "committed", Payload: fmt.Sprint(i)}
		require.NoError(t, pgnotify.Notify(ctx, notifier, m))
		require.Equal(t, []pgnotify.Message{m}, messages(drain(ctx, t, listener)), "round %d", i)
	}
}

func TestWaitZeroTimeoutYieldsBuffered(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	listener, notifier := connect(t), connect(t)
	require.NoError(t, pgnotify.Listen(ctx, listener, "buffered"))

	first := pgnotify.Message{Channel: "buffered", Payload: "first"}
	require.NoError(t, pgnotify.Notify(ctx, notifier, first))
	// The server delivers the pending notification before this query's
	// ReadyForQuery, and pgx buffers it.
	_, err := listener.Exec(ctx, "SELECT 1")
	require.NoError(t, err)
	second := pgnotify.Message{Channel: "buffered", Payload: "second"}
	require.NoError(t, pgnotify.Notify(ctx, notifier, second))

	assert.Equal(t, []pgnotify.Message{first, second}, messages(drain(ctx, t, listener)))
}

func TestWaitBreakLeavesTheRest(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	listener, notifier := connect(t), connect(t)
	require.NoError(t, pgnotify.Listen(ctx, listener, "break"))

	var sent []pgnotify.Message
	for i := range 5 {
		sent = append(sent, pgnotify.Message{Channel: "break", Payload: fmt.Sprint(i)})
	}
	require.NoError(t, pgnotify.Notify(ctx, notifier, sent...))

	// Breaking out of the loop stops the iterator at once (a yield after a
	// false return would panic) and leaves the rest in the connection.
	var got []*pgnotify.Notification
	for n, err := range pgnotify.Wait(ctx, listener, 0) {
		require.NoError(t, err)
		got = append(got, n)
		break
	}
	for n, err := range pgnotify.Wait(ctx, listener, time.Minute) {
		require.NoError(t, err)
		got = append(got, n)
		break
	}
	for n, err := range pgnotify.Wait(ctx, listener, pgnotify.NoTimeout) {
		require.NoError(t, err)
		got = append(got, n)
		break
	}
	got = append(got, drain(ctx, t, listener)...)
	assert.Equal(t, sent, messages(got))
}

func TestWaitIdleTicks(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	listener, notifier := connect(t), connect(t)
	require.NoError(t, pgnotify.Listen(ctx, listener, "idle"))

	var ticks, queries int
	var got []string
	for n, err := range pgnotify.Wait(ctx, listener, 10*time.Millisecond) {
		require.NoError(t, err)
		if n == nil {
			ticks++
			// The loop body may use the connection between iterations.
			var one int
			require.NoError(t, listener.QueryRow(ctx, "SELECT 1").Scan(&one))
			queries++
			switch ticks {
			case 2:
				require.NoError(t, pgnotify.Notify(ctx, notifier, pgnotify.Message{Channel: "idle", Payload: "a"}))
			case 4:
				// Listen on another channel from inside the loop.
				require.NoError(t, pgnotify.Listen(ctx, listener, "idle-2"))
				require.NoError(t, pgnotify.Notify(ctx, notifier, pgnotify.Message{Channel: "idle-2", Payload: "b"}))
			}
			continue
		}
		got = append(got, n.Channel+"/"+n.Payload)
		if len(got) == 2 {
			break
		}
	}
	assert.Equal(t, []string{"idle/a", "idle-2/b"}, got)
	assert.GreaterOrEqual(t, ticks, 4)
	assert.Equal(t, ticks, queries)
	assert.False(t, listener.IsClosed(), "idle ticks never close the connection")
}

func TestWaitContextEnds(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	listener, notifier := connect(t), connect(t)
	require.NoError(t, pgnotify.Listen(ctx, listener, "ctx"))

	for _, timeout := range []time.Duration{pgnotify.NoTimeout, time.Hour, 5 * time.Millisecond} {
		t.Run(fmt.Sprint(timeout), func(t *testing.T) {
			// The deadline ends a wait that nothing else would end.
			wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			var errs []error
			for n, err := range pgnotify.Wait(wctx, listener, timeout) {
				if err != nil {
					errs = append(errs, err)
					continue
				}
				require.Nil(t, n, "nothing was sent")
			}
			require.Len(t, errs, 1)
			assert.ErrorIs(t, errs[0], context.DeadlineExceeded)
			assert.False(t, listener.IsClosed(), "an ended wait keeps the connection")

			// Cancelled from the loop body.
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			m := pgnotify.Message{Channel: "ctx", Payload: "cancel"}
			require.NoError(t, pgnotify.Notify(ctx, notifier, m, m))
			var got []*pgnotify.Notification
			errs = nil
			for n, err := range pgnotify.Wait(cctx, listener, timeout) {
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if n != nil {
					got = append(got, n)
					cancel()
				}
			}
			require.Len(t, errs, 1)
			assert.ErrorIs(t, errs[0], context.Canceled)
			assert.Equal(t, []pgnotify.Message{m}, messages(got), "duplicates in one transaction fold")

			// Already done: the error comes first and alone.
			errs = nil
			for _, err := range pgnotify.Wait(cctx, listener, timeout) {
				errs = append(errs, err)
			}
			require.Len(t, errs, 1)
			assert.ErrorIs(t, errs[0], context.Canceled)

			_, err := listener.Exec(ctx, "SELECT 1")
			require.NoError(t, err)
			assert.Empty(t, drain(ctx, t, listener))
		})
	}
}

func TestWaitZeroTimeoutContextDone(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	listener := connect(t)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	var errs []error
	for n, err := range pgnotify.Wait(cctx, listener, 0) {
		require.Nil(t, n)
		errs = append(errs, err)
	}
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], context.Canceled)
	assert.False(t, listener.IsClosed(), "nothing was sent, so the connection is intact")
}

func requireTerminated(t *testing.T, err error) {
	t.Helper()
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "want a *pgconn.PgError, got %T: %v", err, err)
	assert.Equal(t, "57P01", pgErr.Code) // admin_shutdown
}

func TestWaitConnectionLost(t *testing.T) {
	for _, timeout := range []time.Duration{pgnotify.NoTimeout, time.Hour, 10 * time.Millisecond} {
		t.Run(fmt.Sprint(timeout), func(t *testing.T) {
			requireServer(t)
			ctx := testContext(t)
			listener, notifier := connect(t), connect(t)
			require.NoError(t, pgnotify.Listen(ctx, listener, "lost"))

			var sent []pgnotify.Message
			for i := range 6 {
				sent = append(sent, pgnotify.Message{Channel: "lost", Payload: fmt.Sprint(i)})
			}
			// The first three reach pgx's buffer before the backend dies;
			// Wait must still yield them.
			require.NoError(t, pgnotify.Notify(ctx, notifier, sent[:3]...))
			_, err := listener.Exec(ctx, "SELECT 1")
			require.NoError(t, err)
			require.NoError(t, pgnotify.Notify(ctx, notifier, sent[3:]...))

			var got []*pgnotify.Notification
			var errs []error
			for n, err := range pgnotify.Wait(ctx, listener, timeout) {
				require.Empty(t, errs, "nothing comes after the error")
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if n == nil {
					continue
				}
				got = append(got, n)
				if len(got) == len(sent) {
					// Every notification has arrived; now kill the backend.
					terminate(t, listener.PgConn().PID())
				}
			}
			assert.Equal(t, sent, messages(got))
			require.Len(t, errs, 1)
			requireTerminated(t, errs[0])
			assert.True(t, listener.IsClosed())
		})
	}
}

func TestWaitConnectionLostBeforeWait(t *testing.T) {
	for _, timeout := range []time.Duration{pgnotify.NoTimeout, 0, 10 * time.Millisecond} {
		t.Run(fmt.Sprint(timeout), func(t *testing.T) {
			requireServer(t)
			ctx := testContext(t)
			listener, notifier := connect(t), connect(t)
			require.NoError(t, pgnotify.Listen(ctx, listener, "lost-before"))

			sent := []pgnotify.Message{
				{Channel: "lost-before", Payload: "a"},
				{Channel: "lost-before", Payload: "b"},
			}
			require.NoError(t, pgnotify.Notify(ctx, notifier, sent...))
			_, err := listener.Exec(ctx, "SELECT 1") // buffers both in pgx
			require.NoError(t, err)
			terminate(t, listener.PgConn().PID())

			var got []*pgnotify.Notification
			var errs []error
			for n, err := range pgnotify.Wait(ctx, listener, timeout) {
				require.Empty(t, errs, "nothing comes after the error")
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if n != nil {
					got = append(got, n)
				}
			}
			assert.Equal(t, sent, messages(got), "what pgx had received comes first")
			require.Len(t, errs, 1)
			if timeout != 0 {
				// A wait reads the server's FATAL message. A zero timeout's
				// ping may instead fail on the write, before reading it.
				requireTerminated(t, errs[0])
			}
			assert.True(t, listener.IsClosed())
		})
	}
}

// Cancelling Wait's context while the loop body runs a query on conn does
// not touch that query: Wait ends a read through the socket's deadline only
// while it is reading itself.
func TestWaitCancelDuringLoopBodyLeavesQueryAlone(t *testing.T) {
	c := connect(t)
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	require.NoError(t, pgnotify.Listen(ctx, c, "body"))
	require.NoError(t, pgnotify.Notify(ctx, connect(t), pgnotify.Message{Channel: "body", Payload: "x"}))
	var final error
	steps := 0
	for n, err := range pgnotify.Wait(ctx, c, time.Minute) {
		steps++
		if err != nil {
			final = err
			break
		}
		require.NotNil(t, n)
		cancel()
		// A query longer than any interrupt would take, under its own context.
		_, qerr := c.Exec(context.Background(), "SELECT pg_sleep(0.05)")
		require.NoError(t, qerr)
	}
	assert.Equal(t, 2, steps)
	assert.ErrorIs(t, final, context.Canceled)
	assert.False(t, c.IsClosed())
	_, err := c.Exec(context.Background(), "SELECT 1")
	assert.NoError(t, err)
}

// lateDeadlineConn is a socket on which data and a read deadline can arrive
// at the same time, deterministically: a Read it is told to hold waits
// until the deadline has moved into the past, then returns the data anyway
// and only then applies the deadline. On a real socket this is the window
// between the read system call returning data and the reader goroutine
// running again, a few microseconds wide.
//
// It can also leave pgx's background reader with a Read in flight after a
// query, as a write slower than pgx's 15 ms slow-write timer does under
// load: that Read takes whatever the server sends next, before anyone asks.
//
// Every wait of its own ends when done does, and a held Read is bounded by
// backstop instead of the deadline it holds back, so a test that goes wrong
// fails instead of hanging.
type lateDeadlineConn struct {
	net.Conn
	entered  chan struct{}   // a held Read has begun
	moved    chan struct{}   // the deadline moved into the past during it
	done     <-chan struct{} // the test's context ended
	backstop time.Time       // the test context's deadline

	mu       sync.Mutex
	hold     bool       // hold the next Read
	reading  bool       // a held Read is in progress
	deferred *time.Time // deadline to apply once the Read returns
	starved  bool       // a held Read returned no data
	inFlight int        // Reads in progress
	strand   strandStep // leaving a Read in flight after the next Write
	stranded chan struct{}
}

// strandStep is how far lateDeadlineConn.Write has got in leaving pgx's
// background reader with a Read in flight.
type strandStep int

const (
	strandOff         strandStep = iota
	strandWantReply              // written; wait for a Read to return data
	strandWantRead               // the reply is read; wait for the next Read
	strandDoneReading            // a Read is in flight with nothing to read
)

func newLateDeadlineConn(ctx context.Context) *lateDeadlineConn {
	backstop, _ := ctx.Deadline()
	return &lateDeadlineConn{
		entered:  make(chan struct{}),
		moved:    make(chan struct{}),
		done:     ctx.Done(),
		backstop: backstop,
	}
}

func (c *lateDeadlineConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	held := c.hold
	c.hold, c.reading = false, held
	c.inFlight++
	if c.strand == strandWantRead {
		c.strand = strandDoneReading
		close(c.stranded)
	}
	c.mu.Unlock()
	if !held {
		n, err := c.Conn.Read(p)
		c.mu.Lock()
		c.inFlight--
		if c.strand == strandWantReply && n > 0 {
			c.strand = strandWantRead
		}
		c.mu.Unlock()
		return n, err
	}
	select {
	case c.entered <- struct{}{}:
	case <-c.done:
	}
	select {
	case <-c.moved:
	case <-c.done:
	}
	// The deadline that moved is held back until this Read returns: if
	// there is nothing to read, the test's deadline ends it instead.
	c.Conn.SetReadDeadline(c.backstop)
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.reading = false
	c.inFlight--
	c.starved = c.starved || n == 0
	d := c.deferred
	c.deferred = nil
	c.mu.Unlock()
	if d != nil {
		c.Conn.SetReadDeadline(*d)
	}
	return n, err
}

func (c *lateDeadlineConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	if c.reading && !t.IsZero() && t.Before(time.Now()) {
		c.deferred = &t
		c.mu.Unlock()
		select {
		case c.moved <- struct{}{}:
		case <-c.done:
		}
		return nil
	}
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

// Write, told to by strandNextWrite, returns only once pgx's slow-write
// timer has started the background reader, that reader has read the reply
// to what was written, and it has begun its next Read: when pgx then stops
// the reader, that Read stays in flight.
func (c *lateDeadlineConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	strand := c.strand == strandWantReply
	c.mu.Unlock()
	n, err := c.Conn.Write(p)
	if strand && err == nil {
		select {
		case <-c.stranded:
		case <-c.done:
		}
	}
	return n, err
}

// strandNextWrite makes the next query leave a Read in flight.
func (c *lateDeadlineConn) strandNextWrite() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.strand, c.stranded = strandWantReply, make(chan struct{})
}

// readsInFlight reports how many Reads are in progress.
func (c *lateDeadlineConn) readsInFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inFlight
}

// unhold cancels a hold that no Read took, and reports whether there was
// one and whether a held Read had nothing to read.
func (c *lateDeadlineConn) unhold() (unused, starved bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	unused, starved = c.hold, c.starved
	c.hold, c.starved = false, false
	return unused, starved
}

// TestWaitCancelRacingDataLeavesConnUsable is issue 7 item 1, made
// deterministic: hundreds of cancels of a Wait that has notifications
// already buffered, in pgx and on the socket; the last comes in through a
// read whose deadline the cancel moved into the past.
// Wait returns it with no error, and must still take its deadline off conn,
// or the next query times out and pgx closes conn (with NoTimeout nothing
// else would clear it).
//
// The stranded-read variant makes each round's query leave pgx's background
// reader with a Read in flight, as a slow write does under load: that Read,
// not Wait's held one, would take the notification on the socket, and the
// held Read would then wait for data that never comes (the hang this test
// had under load). The test syncs conn before sending it.
func TestWaitCancelRacingDataLeavesConnUsable(t *testing.T) {
	for _, timeout := range []time.Duration{pgnotify.NoTimeout, time.Hour} {
		for _, stranded := range []bool{false, true} {
			name, rounds := fmt.Sprint(timeout), 200
			if stranded {
				// Each stranded round waits out pgx's 15 ms timer.
				name, rounds = name+"/stranded-read", 50
			}
			t.Run(name, func(t *testing.T) {
				testWaitCancelRacingData(t, timeout, stranded, rounds)
			})
		}
	}
}

func testWaitCancelRacingData(t *testing.T, timeout time.Duration, stranded bool, rounds int) {
	ctx := testContext(t)
	late := newLateDeadlineConn(ctx)
	c := connectConfig(t, func(cfg *pgx.ConnConfig) {
		cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := new(net.Dialer).DialContext(ctx, network, addr)
			late.Conn = nc
			return late, err
		}
	})
	notifier := connect(t)
	require.NoError(t, pgnotify.Listen(ctx, c, "late"))
	for round := range rounds {
		// Eight in pgx's buffer (a session hears its own NOTIFY before
		// Notify returns), popped with no I/O, then one on the socket.
		var sent []pgnotify.Message
		for i := range 9 {
			sent = append(sent, pgnotify.Message{Channel: "late", Payload: fmt.Sprint(round, "/", i)})
		}
		require.NoError(t, pgnotify.Notify(ctx, c, sent[:8]...))
		if stranded {
			late.strandNextWrite()
			require.NoError(t, c.PgConn().Exec(ctx, "SELECT 1").Close())
			require.Equal(t, 1, late.readsInFlight(), "round %d: the query left no Read in flight", round)
		}
		// A query whose write outlasts pgx's slow-write timer (under load,
		// any) can leave a Read in flight; SyncConn ends it, so that the
		// next Read is Wait's held one.
		require.NoError(t, c.PgConn().SyncConn(ctx))
		require.Zero(t, late.readsInFlight(), "round %d: a Read in flight would take the notification", round)
		require.NoError(t, pgnotify.Notify(ctx, notifier, sent[8]))
		late.mu.Lock()
		late.hold = true
		late.mu.Unlock()
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			// Cancel while Wait is inside the held read.
			select {
			case <-late.entered:
				cancel()
			case <-wctx.Done():
			}
		}()
		var got []*pgnotify.Notification
		var final error
		for n, err := range pgnotify.Wait(wctx, c, timeout) {
			if err != nil {
				final = err
				break
			}
			got = append(got, n)
		}
		cancel()
		unused, starved := late.unhold()
		require.False(t, unused, "round %d: Wait ended without reading the socket (err %v)", round, final)
		require.False(t, starved, "round %d: Wait's held Read had nothing to read until the test's deadline: "+
			"a Read left in flight took the notification first", round)
		require.ErrorIs(t, final, context.Canceled, "round %d", round)
		require.Equal(t, sent, messages(got), "round %d", round)
		_, err := c.Exec(ctx, "SELECT 1")
		require.NoError(t, err, "round %d: a query after a cancelled Wait", round)
	}
}

// TestWaitWithReadLeftInFlight: a query whose write outlasts pgx's
// slow-write timer (any, under load) can return with pgx's background
// reader still inside a Read on the socket. Wait then reads through that
// Read: what it brings is yielded, the idle timeout and ctx's end still
// interrupt it (the socket's deadline applies to a Read in progress), and
// conn stays usable.
func TestWaitWithReadLeftInFlight(t *testing.T) {
	ctx := testContext(t)
	late := newLateDeadlineConn(ctx)
	c := connectConfig(t, func(cfg *pgx.ConnConfig) {
		cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := new(net.Dialer).DialContext(ctx, network, addr)
			late.Conn = nc
			return late, err
		}
	})
	require.NoError(t, pgnotify.Listen(ctx, c, "inflight"))
	strand := func() {
		t.Helper()
		late.strandNextWrite()
		require.NoError(t, c.PgConn().Exec(ctx, "SELECT 1").Close())
		require.Equal(t, 1, late.readsInFlight(), "the query left no Read in flight")
	}
	usable := func(what string) {
		t.Helper()
		_, err := c.Exec(ctx, "SELECT 1")
		require.NoError(t, err, "a query after %s", what)
	}

	strand()
	require.NoError(t, pgnotify.Notify(ctx, connect(t), pgnotify.Message{Channel: "inflight", Payload: "x"}))
	for n, err := range pgnotify.Wait(ctx, c, pgnotify.NoTimeout) {
		require.NoError(t, err)
		assert.Equal(t, "x", n.Payload)
		break
	}
	usable("a notification the Read in flight brought")

	strand()
	ticks := 0
	for n, err := range pgnotify.Wait(ctx, c, 10*time.Millisecond) {
		require.NoError(t, err)
		require.Nil(t, n)
		ticks++
		break
	}
	assert.Equal(t, 1, ticks)
	usable("an idle tick")

	strand()
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	var errs []error
	within(t, receiveTimeout, "a Wait whose ctx ended", func() {
		for n, err := range pgnotify.Wait(short, c, pgnotify.NoTimeout) {
			assert.Nil(t, n)
			errs = append(errs, err)
		}
	})
	require.Len(t, errs, 1)
	assert.ErrorIs(t, errs[0], context.DeadlineExceeded)
	usable("a Wait whose ctx ended")
}

// TestWaitDeafConnErrors: a connection dialled from another's Config()
// delivers into the other's buffer. Wait can tell for free (pgx returns no
// notification and no error) and ends with an error that says so, instead
// of waiting forever.
func TestWaitDeafConnErrors(t *testing.T) {
	for _, timeout := range []time.Duration{pgnotify.NoTimeout, time.Hour} {
		t.Run(fmt.Sprint(timeout), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(testContext(t), 10*time.Second)
			defer cancel()
			src := connect(t)
			deaf := connectFrom(t, src)
			require.NoError(t, pgnotify.Listen(ctx, deaf, "deaf-wait"))
			require.NoError(t, pgnotify.Notify(ctx, connect(t), pgnotify.Message{Channel: "deaf-wait", Payload: "x"}))
			var errs []error
			for n, err := range pgnotify.Wait(ctx, deaf, timeout) {
				require.Nil(t, n)
				errs = append(errs, err)
			}
			require.Len(t, errs, 1)
			assert.ErrorContains(t, errs[0], "OnNotification")
			assert.False(t, deaf.IsClosed(), "Wait leaves the connection open")
		})
	}
}
