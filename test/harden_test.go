package pgnotifytest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
)

// Tests for the core hardening issue: each names the item it proves.

// Item 3: Close whose ctx expires while a Remove is in progress leaves the
// connection Remove hands back open.
func TestCloseExpiringDuringRemoveKeepsRemovedConn(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "rmclose")
	other := listener(t, "rmclose2")
	m := pgnotify.NewManager()
	require.NoError(t, m.Add(ctx, c, other))
	release := make(chan struct{})
	lent := lend(t, ctx, m, c, release)
	removed := make(chan error, 1)
	go func() { removed <- m.Remove(ctx, c) }()
	waitUntil(t, 10*time.Second, "Remove to stop the member", func() bool { return len(m.Conns()) == 1 })

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	within(t, 10*time.Second, "Close", func() { _ = m.Close(short) })
	close(release)
	require.NoError(t, receive(t, lent, "the Do to return"))
	require.NoError(t, receive(t, removed, "Remove to return"))
	require.False(t, c.IsClosed())
	require.NoError(t, c.Ping(ctx), "the connection Remove handed back works")
	assert.True(t, other.IsClosed(), "Close closed the other member")
}

// Item 5: a Do function that leaves a transaction open does not leave the
// member deaf: Do rolls it back and says so.
func TestDoLeavingTransactionOpenIsRolledBack(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "txopen")
	m := newManager(t)
	require.NoError(t, m.Add(ctx, c))
	for _, sql := range []string{"BEGIN", "BEGIN; SELECT 1/0"} {
		err := m.Do(ctx, c, func(c *pgx.Conn) error {
			_, _ = c.PgConn().Exec(ctx, sql).ReadAll()
			return nil
		})
		require.Error(t, err, sql)
		assert.Contains(t, err.Error(), "transaction", sql)
		assert.Contains(t, err.Error(), "rolled back", sql)
		require.NoError(t, m.Do(ctx, c, func(c *pgx.Conn) error {
			if s := c.PgConn().TxStatus(); s != 'I' {
				return fmt.Errorf("status %q after Do", s)
			}
			return nil
		}))
		notify(t, "txopen", "heard after "+sql)
		ev := next(t, ctx, m)
		require.Equal(t, pgnotify.Batch, ev.Kind)
		assert.Equal(t, "heard after "+sql, ev.Notifications[0].Payload)
	}
	// fn's own error comes with it.
	boom := errors.New("boom")
	err := m.Do(ctx, c, func(c *pgx.Conn) error {
		_, _ = c.PgConn().Exec(ctx, "BEGIN").ReadAll()
		return boom
	})
	assert.ErrorIs(t, err, boom)
	assert.Contains(t, err.Error(), "rolled back")
}

// Item 6: Close called inside a Do function returns; the lent connection is
// closed once the function returns.
func TestCloseInsideDoReturns(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "closeindo")
	m := pgnotify.NewManager()
	require.NoError(t, m.Add(ctx, c))
	var closeErr error
	within(t, 10*time.Second, "Do calling Close", func() {
		err := m.Do(ctx, c, func(*pgx.Conn) error {
			closeErr = m.Close(context.Background())
			return nil
		})
		assert.NoError(t, err)
	})
	assert.NoError(t, closeErr)
	assert.True(t, c.IsClosed(), "the lent member is closed before Do returns")
	waitBackendGone(t, c.PgConn().PID(), "the lent connection to be closed")
	_, err := m.Next(ctx)
	assert.ErrorIs(t, err, pgnotify.ErrClosed)
}

// Item 7: Close returns by its ctx's end (or at once) while a Do function
// runs, and while an automatic reconnect's dial ignores its context.
func TestCloseDoesNotWaitForDoOrStuckDial(t *testing.T) {
	ctx := testContext(t)

	t.Run("Do", func(t *testing.T) {
		c := listener(t, "closedo")
		m := pgnotify.NewManager()
		require.NoError(t, m.Add(ctx, c))
		release := make(chan struct{})
		lent := lend(t, ctx, m, c, release)
		queued := make(chan error, 1)
		go func() { queued <- m.Do(ctx, c, func(*pgx.Conn) error { return nil }) }()
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		var err error
		within(t, 10*time.Second, "Close while a Do function runs", func() { err = m.Close(short) })
		assert.ErrorIs(t, err, context.DeadlineExceeded, "the lent member is not closed yet")
		assert.ErrorIs(t, receive(t, queued, "the queued Do"), pgnotify.ErrClosed, "a Do queued behind the lent one")
		assert.True(t, backendAlive(t, c.PgConn().PID()), "the function still has the connection")
		close(release)
		assert.NoError(t, receive(t, lent, "the Do to return"))
		waitBackendGone(t, c.PgConn().PID(), "the connection to be closed after the function")
	})

	t.Run("dial", func(t *testing.T) {
		release := make(chan struct{})
		dialled := make(chan *pgx.Conn, 1)
		var dials int
		dial := func(context.Context, pgnotify.Garbage) (*pgx.Conn, error) {
			dials++
			<-release // ignores its context
			c, err := pgx.Connect(context.Background(), connString)
			dialled <- c
			return c, err
		}
		c := listener(t, "closedial")
		m := pgnotify.NewManager(pgnotify.WithReconnect(dial, time.Millisecond, time.Millisecond))
		require.NoError(t, m.Add(ctx, c))
		adminExec(t, "SELECT pg_terminate_backend($1)", c.PgConn().PID())
		untilKind(t, ctx, m, pgnotify.Dead)
		waitUntil(t, 10*time.Second, "a reconnect attempt", func() bool { return m.Stats().ReconnectAttempts > 0 })
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		var err error
		within(t, 10*time.Second, "Close while a dial ignores its context", func() { err = m.Close(short) })
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		close(release)
		late := receive(t, dialled, "the released dial")
		require.NotNil(t, late)
		t.Cleanup(func() { closeConn(t, late) })
		waitBackendGone(t, late.PgConn().PID(), "the late connection to be closed, not added")
		assert.Empty(t, m.Conns())
	})
}

// Item 8: a request for the lent connection from inside its Do function
// fails at once instead of waiting for itself; the member is unharmed.
func TestReentrantRequestsInsideDoFailFast(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "reenter")
	other := listener(t, "reenter2")
	m := newManager(t)
	require.NoError(t, m.Add(ctx, c, other))
	within(t, 10*time.Second, "re-entrant calls", func() {
		err := m.Do(context.Background(), c, func(*pgx.Conn) error {
			errs := []error{
				m.Do(context.Background(), c, func(*pgx.Conn) error { return nil }),
				m.Listen(context.Background(), c, "x"),
				m.Unlisten(context.Background(), c, "reenter"),
				m.UnlistenAll(context.Background(), c),
				m.Remove(context.Background(), c),
			}
			for i, err := range errs {
				if err == nil || !strings.Contains(err.Error(), "lent") {
					return fmt.Errorf("call %d: %v", i, err)
				}
			}
			// Another member is fair game.
			return m.Do(context.Background(), other, func(o *pgx.Conn) error { return o.Ping(ctx) })
		})
		assert.NoError(t, err)
	})
	assert.Equal(t, []*pgx.Conn{c, other}, m.Conns(), "the Remove inside did nothing")
	notify(t, "reenter", "still heard")
	ev := next(t, ctx, m)
	require.Equal(t, pgnotify.Batch, ev.Kind)
	assert.Equal(t, c, ev.Conn)
}

// Item 9: a second goroutine in Next gets an error at once instead of
// hanging.
func TestTwoConsumersInNext(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "twonext")
	m := newManager(t)
	require.NoError(t, m.Add(ctx, c))
	results := make(chan error, 2)
	events := make(chan pgnotify.Event, 2)
	for range 2 {
		go func() {
			ev, err := m.Next(ctx)
			events <- ev
			results <- err
		}()
	}
	var first error
	within(t, 10*time.Second, "the second Next", func() { first = <-results })
	require.Error(t, first)
	assert.Contains(t, first.Error(), "two goroutines")
	notify(t, "twonext", "x")
	require.NoError(t, receive(t, results, "the first Next"))
	receive(t, events, "the second Next's event")
	ev := receive(t, events, "the first Next's event")
	assert.Equal(t, pgnotify.Batch, ev.Kind)
}

// Item 10: Remove then Add of the same connection keeps its server order,
// even when the removed member still holds several batches.
func TestRemoveReAddKeepsOrder(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "readd")
	m := newManager(t, pgnotify.WithMaxPending(2))
	require.NoError(t, m.Add(ctx, c))
	ping := func() {
		// A round trip pulls everything sent before it into pending.
		require.NoError(t, m.Do(ctx, c, func(*pgx.Conn) error { return nil }))
		require.NoError(t, m.Do(ctx, c, func(c *pgx.Conn) error { return c.Ping(ctx) }))
	}
	notify(t, "readd", seq("", 10)...)
	ping()
	require.NoError(t, m.Remove(ctx, c))
	require.NoError(t, m.Add(ctx, c))
	notify(t, "readd", seq("1", 10)...)
	ping()
	var got []string
	for len(got) < 20 {
		ev := next(t, ctx, m)
		require.Equal(t, pgnotify.Batch, ev.Kind)
		assert.LessOrEqual(t, len(ev.Notifications), 2)
		for _, n := range ev.Notifications {
			got = append(got, n.Payload)
		}
	}
	assert.Equal(t, append(seq("", 10), seq("1", 10)...), got)
}

// Item 11: the pending bound counts bytes too: large payloads stop the
// waiter at the byte bound, batches respect it, and Stats shows it.
func TestMaxPendingBytesBoundsMemory(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "bytes")
	const bound = 64 << 10
	m := newManager(t, pgnotify.WithMaxPendingBytes(bound))
	require.NoError(t, m.Add(ctx, c))
	pad := strings.Repeat("x", 7990)
	const total = 2000 // 16 MB: more than loopback socket buffers hold
	for i := 0; i < total; i += 200 {
		ps := make([]string, 200)
		for k := range ps {
			ps[k] = fmt.Sprintf("%05d", i+k) + pad
		}
		notify(t, "bytes", ps...)
	}
	one := 48 + len("bytes") + 5 + len(pad)
	waitUntil(t, 10*time.Second, "a full buffer", func() bool { return m.Stats().PendingBytes >= bound })
	s := m.Stats()
	assert.LessOrEqual(t, s.PendingBytes, bound+one, "at most one notification past the bound")
	assert.Less(t, s.Pending, 2048, "the byte bound, not the count, stopped it")
	n := 0
	for n < total {
		ev := next(t, ctx, m)
		require.Equal(t, pgnotify.Batch, ev.Kind)
		for _, x := range ev.Notifications {
			require.Equal(t, fmt.Sprintf("%05d", n)+pad, x.Payload)
			n++
		}
		require.LessOrEqual(t, sizeOf(ev.Notifications), bound)
	}
	s = m.Stats()
	assert.Zero(t, s.PendingBytes)
	assert.LessOrEqual(t, s.PendingBytesPeak, bound+one)
	assert.Positive(t, s.PendingPeak)

	// A round trip on a full member takes in the whole backlog, as
	// documented, and the peak shows it.
	late := make([]string, 300) // 2.4 MB, far past the bound
	for i := range late {
		late[i] = fmt.Sprintf("l%04d", i) + pad
	}
	notify(t, "bytes", late...)
	waitUntil(t, 10*time.Second, "a full buffer", func() bool { return m.Stats().PendingBytes >= bound })
	evs, err := m.Drain(ctx)
	require.NoError(t, err)
	var got []string
	for _, ev := range evs {
		require.LessOrEqual(t, sizeOf(ev.Notifications), bound)
		for _, x := range ev.Notifications {
			got = append(got, x.Payload)
		}
	}
	assert.Equal(t, late, got)
	assert.Greater(t, m.Stats().PendingBytesPeak, 10*bound, "the drain's round trip pulled the backlog in")
}

// sizeOf is a batch's size as WithMaxPendingBytes counts it.
func sizeOf(ns []*pgnotify.Notification) int {
	n := 0
	for _, x := range ns {
		n += 48 + len(x.Channel) + len(x.Payload)
	}
	return n
}

// Item 12: an error caused by a member's death matches ErrDead and still
// unwraps to the server's cause.
func TestErrDeadIsMatchable(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "errdead")
	m := newManager(t)
	require.NoError(t, m.Add(ctx, c))
	adminExec(t, "SELECT pg_terminate_backend($1)", c.PgConn().PID())
	ev := untilKind(t, ctx, m, pgnotify.Dead)
	assert.False(t, errors.Is(ev.Err, pgnotify.ErrDead), "Event.Err is the cause itself")
	for name, err := range map[string]error{
		"Do":     m.Do(ctx, c, func(*pgx.Conn) error { return nil }),
		"Listen": m.Listen(ctx, c, "x"),
		"Remove": m.Remove(ctx, c),
	} {
		assert.ErrorIs(t, err, pgnotify.ErrDead, name)
		var pgErr *pgconn.PgError
		if assert.ErrorAs(t, err, &pgErr, name) {
			assert.Equal(t, "57P01", pgErr.Code, name)
		}
		assert.Equal(t, 1, strings.Count(err.Error(), "pgnotify:"), "%s: %v", name, err)
	}
}

// Item 15: Manager.UnlistenAll is tracked: recovery listens on nothing.
func TestManagerUnlistenAllTracked(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "ua1", "ua2")
	m := newManager(t, pgnotify.WithTimeout(0))
	require.NoError(t, m.Add(ctx, c))
	require.NoError(t, m.UnlistenAll(ctx, c))
	notify(t, "ua1", "unheard")
	got, _ := drainPayloads(t, ctx, m)
	assert.Empty(t, got[c])
	require.NoError(t, m.Listen(ctx, c, "ua3"))
	adminExec(t, "SELECT pg_terminate_backend($1)", c.PgConn().PID())
	m.SetTimeout(pgnotify.NoTimeout)
	untilKind(t, ctx, m, pgnotify.Dead)
	g := m.Garbage()
	require.Len(t, g, 1)
	assert.Equal(t, []string{"ua3"}, g[0].Channels)
}

// Item 13: a death is classed by what happened, whoever met it: a cut in
// the middle of a simple-protocol query is "network" (pgx reports it as
// pgconn.ErrConnClosed), a drain round trip that gets no answer is
// "health", as a health ping's would be.
func TestDeathCauseOneClassification(t *testing.T) {
	ctx := testContext(t)

	t.Run("cut during a simple-protocol query", func(t *testing.T) {
		p := newProxy(t)
		c, link := proxied(t, p, "cause")
		m := newManager(t)
		require.NoError(t, m.Add(ctx, c))
		err := m.Do(ctx, c, func(c *pgx.Conn) error {
			link.Cut()
			_, err := c.Exec(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol)
			return err
		})
		require.Error(t, err)
		ev := untilKind(t, ctx, m, pgnotify.Dead)
		assert.Equal(t, "network", causeOf(m), "%v", ev.Err)
	})

	t.Run("drain round trip on a stalled server", func(t *testing.T) {
		c := listener(t, "cause")
		m := newManager(t, pgnotify.WithHealthCheck(time.Hour, 300*time.Millisecond))
		require.NoError(t, m.Add(ctx, c))
		freeze(t, c.PgConn().PID())
		evs, err := m.Drain(ctx)
		require.NoError(t, err)
		require.Len(t, evs, 1)
		require.Equal(t, pgnotify.Dead, evs[0].Kind)
		assert.Equal(t, "health", causeOf(m), "%v", evs[0].Err)
	})
}
