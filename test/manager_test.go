package pgnotifytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
)

func TestManagerTwoConnsNotifyEachOther(t *testing.T) {
	ctx := testContext(t)
	a, b := listener(t, "to_a"), listener(t, "to_b")
	m := newManager(t)
	require.NoError(t, m.Add(ctx, a, b))
	assert.ElementsMatch(t, []*pgx.Conn{a, b}, m.Conns())

	// a and b ping-pong through m.Do: each notification received makes
	// the receiver answer the other, until both have heard 20.
	require.NoError(t, m.Do(ctx, a, func(c *pgx.Conn) error {
		return pgnotify.Notify(ctx, c, pgnotify.Message{Channel: "to_b", Payload: "0"})
	}))
	heard := map[*pgx.Conn]int{}
	for heard[a] < 20 || heard[b] < 20 {
		ev := next(t, ctx, m)
		require.Equal(t, pgnotify.Batch, ev.Kind)
		for _, n := range ev.Notifications {
			heard[ev.Conn]++
			to := "to_a"
			if ev.Conn == a {
				to = "to_b"
			}
			require.NoError(t, m.Do(ctx, ev.Conn, func(c *pgx.Conn) error {
				return pgnotify.Notify(ctx, c, pgnotify.Message{Channel: to, Payload: n.Payload + "+"})
			}))
		}
		if heard[a] >= 20 && heard[b] >= 20 {
			break
		}
	}
	require.NoError(t, m.Remove(ctx, a))
	require.NoError(t, m.Remove(ctx, b))
	assert.Empty(t, m.Conns())
	// What arrived before the removals is still owed; then the set is empty.
	for {
		ev, err := m.Next(ctx)
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		require.Equal(t, pgnotify.Batch, ev.Kind)
	}
	// Removed connections are the caller's again, and still listening.
	chs, err := pgnotify.ListeningChannels(ctx, a)
	require.NoError(t, err)
	assert.Equal(t, []string{"to_a"}, chs)
}

func TestManagerIdleTicksDriveSelfNotify(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "self")
	m := newManager(t, pgnotify.WithTimeout(20*time.Millisecond))
	require.NoError(t, m.Add(ctx, c))
	idles, got := 0, 0
	for got < 5 {
		ev := next(t, ctx, m)
		switch ev.Kind {
		case pgnotify.Idle:
			idles++
			require.NoError(t, m.Do(ctx, c, func(c *pgx.Conn) error {
				return pgnotify.Notify(ctx, c, pgnotify.Message{Channel: "self", Payload: fmt.Sprint(idles)})
			}))
		case pgnotify.Batch:
			got += len(ev.Notifications)
		default:
			t.Fatalf("unexpected %v", ev.Kind)
		}
	}
	assert.GreaterOrEqual(t, idles, 5)
}

func TestManagerIdleNeverWhileBatchPending(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "busy")
	m := newManager(t)
	require.NoError(t, m.Add(ctx, c))
	for i := range 20 {
		p := fmt.Sprint(i)
		notify(t, "busy", p)
		// A round trip inside Do makes the member receive it: it is
		// pending when Do returns.
		require.NoError(t, m.Do(ctx, c, func(c *pgx.Conn) error { return c.PgConn().Ping(ctx) }))
		m.SetTimeout(time.Nanosecond)
		ev := next(t, ctx, m)
		require.Equal(t, pgnotify.Batch, ev.Kind, "round %d", i)
		assert.Equal(t, p, ev.Notifications[0].Payload)
		ev = next(t, ctx, m)
		require.Equal(t, pgnotify.Idle, ev.Kind)
		m.SetTimeout(pgnotify.NoTimeout)
	}
}

func TestManagerDrainIsReusable(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "drain")
	m := newManager(t, pgnotify.WithTimeout(0))
	require.NoError(t, m.Add(ctx, c))
	for round := range 5 {
		want := seq(fmt.Sprintf("r%d-", round), round*3)
		if len(want) > 0 {
			notify(t, "drain", want...)
		}
		var got []string
		for ev, err := range m.Events(ctx) {
			require.NoError(t, err)
			require.Equal(t, pgnotify.Batch, ev.Kind)
			for _, n := range ev.Notifications {
				got = append(got, n.Payload)
			}
		}
		assert.Equal(t, want, nilIfEmpty(got), "round %d", round)
	}
	// An empty set drains to io.EOF at once.
	require.NoError(t, m.Remove(ctx, c))
	_, err := m.Next(ctx)
	assert.Equal(t, io.EOF, err)
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return []string{}
	}
	return s
}

func TestManagerDrainCompletenessManyConns(t *testing.T) {
	ctx := testContext(t)
	const conns, rounds = 16, 25
	var cs []*pgx.Conn
	for i := range conns {
		c := listener(t, fmt.Sprintf("ch%d", i), "all")
		cs = append(cs, c)
	}
	m := newManager(t) // after the connections: cleanups run last-in first-out
	require.NoError(t, m.Add(ctx, cs...))
	for r := range rounds {
		// Every notification committed before the pass is in it, with no
		// sleep and no other query in between.
		var msgs []pgnotify.Message
		want := map[*pgx.Conn][]string{}
		for i, c := range cs {
			if (i+r)%3 == 0 {
				p := fmt.Sprintf("r%d-c%d", r, i)
				msgs = append(msgs, pgnotify.Message{Channel: fmt.Sprintf("ch%d", i), Payload: p})
				want[c] = append(want[c], p)
			}
		}
		msgs = append(msgs, pgnotify.Message{Channel: "all", Payload: fmt.Sprint("all", r)})
		for _, c := range cs {
			want[c] = append(want[c], fmt.Sprint("all", r))
		}
		require.NoError(t, pgnotify.Notify(ctx, notifier(t), msgs...))
		got, other := drainPayloads(t, ctx, m)
		require.Empty(t, other)
		require.Equal(t, want, got, "round %d", r)
	}
}

func TestManagerTerminatedBackendIsDead(t *testing.T) {
	ctx := testContext(t)
	victim, bystander := listener(t, "v", "shared"), listener(t, "b", "shared")
	m := newManager(t)
	require.NoError(t, m.Add(ctx, victim, bystander))
	pid := victim.PgConn().PID()

	// Received before the death: yielded before the Dead event.
	notify(t, "v", "before")
	got, _ := drainPayloads(t, ctx, m)
	require.Equal(t, []string{"before"}, got[victim])
	notify(t, "v", "just-before")
	// A round trip makes the member receive it: the server, woken by both
	// the notify and the terminate signal, would otherwise die first.
	require.NoError(t, m.Do(ctx, victim, func(c *pgx.Conn) error { return c.PgConn().Ping(ctx) }))
	start := time.Now()
	adminExec(t, "SELECT pg_terminate_backend($1)", pid)

	var kinds []pgnotify.Kind
	var dead pgnotify.Event
	delivered := len(got[victim])
	for dead.Kind != pgnotify.Dead {
		ev := next(t, ctx, m)
		kinds = append(kinds, ev.Kind)
		if ev.Kind == pgnotify.Batch {
			delivered += len(ev.Notifications)
			assert.Equal(t, victim, ev.Conn)
			assert.Equal(t, "just-before", ev.Notifications[0].Payload)
		}
		if ev.Kind == pgnotify.Dead {
			dead = ev
		}
	}
	t.Logf("pg_terminate_backend: Dead %v after the terminate began; sent 2, delivered %d",
		time.Since(start).Round(time.Microsecond), delivered)
	assert.Equal(t, []pgnotify.Kind{pgnotify.Batch, pgnotify.Dead}, kinds)
	assert.Equal(t, victim, dead.Conn)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, dead.Err, &pgErr)
	assert.Equal(t, "57P01", pgErr.Code)

	g := m.Garbage()
	require.Len(t, g, 1)
	assert.Equal(t, victim, g[0].Conn)
	assert.Equal(t, []string{"shared", "v"}, g[0].Channels)
	assert.Equal(t, pid, g[0].Conn.PgConn().PID())
	assert.Equal(t, []*pgx.Conn{bystander}, m.Conns())

	// Requests on the dead member say why it died.
	err := m.Do(ctx, victim, func(*pgx.Conn) error { return nil })
	require.ErrorAs(t, err, &pgErr)
	assert.Equal(t, "57P01", pgErr.Code)
	require.ErrorAs(t, m.Remove(ctx, victim), &pgErr)
	require.ErrorAs(t, m.Listen(ctx, victim, "x"), &pgErr)

	// The bystander carries on untouched.
	notify(t, "shared", "after")
	got, other := drainPayloads(t, ctx, m)
	assert.Empty(t, other)
	assert.Equal(t, map[*pgx.Conn][]string{bystander: {"after"}}, got)

	taken := m.TakeGarbage()
	require.Len(t, taken, 1)
	assert.Empty(t, m.Garbage())
	receive(t, taken[0].Conn.PgConn().CleanupDone(), "the taken connection's cleanup")
}

func TestManagerAddIsAllOrNothing(t *testing.T) {
	ctx := testContext(t)
	good := listener(t, "aon")

	closed := connect(t)
	require.NoError(t, closed.Close(ctx))
	inTx := connect(t)
	_, err := inTx.Exec(ctx, "BEGIN")
	require.NoError(t, err)
	m := newManager(t)

	for name, conns := range map[string][]*pgx.Conn{
		"nil":       {good, nil},
		"closed":    {good, closed},
		"duplicate": {good, good},
		"in tx":     {good, inTx},
	} {
		err := m.Add(ctx, conns...)
		require.Error(t, err, name)
		assert.Empty(t, m.Conns(), name)
	}
	require.ErrorIs(t, m.Add(ctx, good, good), pgnotify.ErrAlreadyAdded)
	require.NoError(t, m.Add(ctx, good))
	require.ErrorIs(t, m.Add(ctx, good), pgnotify.ErrAlreadyAdded)
	// The rejected connection in a transaction was not touched.
	assert.Equal(t, byte('T'), inTx.PgConn().TxStatus())
}

func TestManagerKeepsNotificationsBufferedBeforeAdd(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "early")
	notify(t, "early", "1", "2")
	// A query reads the notifications into pgx's buffer.
	_, err := c.Exec(ctx, "SELECT 1")
	require.NoError(t, err)
	notify(t, "early", "3")

	m := newManager(t, pgnotify.WithTimeout(0))
	require.NoError(t, m.Add(ctx, c))
	got, _ := drainPayloads(t, ctx, m)
	assert.Equal(t, []string{"1", "2", "3"}, got[c])
}

func TestManagerAddCancelledKeepsConnection(t *testing.T) {
	c := listener(t, "keep")
	m := newManager(t)
	ctx, cancel := context.WithCancel(testContext(t))
	cancel()
	require.ErrorIs(t, m.Add(ctx, c), context.Canceled)
	assert.False(t, c.IsClosed())
	assert.Empty(t, m.Conns())
	require.NoError(t, m.Add(testContext(t), c))
}

func TestManagerRemovePendingStillYielded(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "rm")
	m := newManager(t)
	require.NoError(t, m.Add(ctx, c))
	notify(t, "rm", seq("p", 10)...)
	// Let the waiter read them, then remove before the consumer asks.
	evs, err := m.Drain(ctx)
	require.NoError(t, err)
	require.Len(t, evs, 1)
	notify(t, "rm", "late")
	// A round trip inside Do makes the member receive "late".
	require.NoError(t, m.Do(ctx, c, func(c *pgx.Conn) error { return c.Ping(ctx) }))
	require.NoError(t, m.Remove(ctx, c))
	ev := next(t, ctx, m)
	require.Equal(t, pgnotify.Batch, ev.Kind)
	assert.Equal(t, c, ev.Conn)
	assert.Equal(t, "late", ev.Notifications[0].Payload)
	_, err = m.Next(ctx)
	assert.Equal(t, io.EOF, err)
	require.ErrorIs(t, m.Remove(ctx, c), pgnotify.ErrNotManaged)
	require.ErrorIs(t, m.Do(ctx, c, func(*pgx.Conn) error { return nil }), pgnotify.ErrNotManaged)
}

func TestManagerOrderAndNoLossEightConns(t *testing.T) {
	ctx := testContext(t)
	const conns, per = 8, 3000
	var cs []*pgx.Conn
	for i := range conns {
		cs = append(cs, listener(t, fmt.Sprint("o", i)))
	}
	m := newManager(t)
	require.NoError(t, m.Add(ctx, cs...))
	var wg sync.WaitGroup
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := connect(t)
			for j := 0; j < per; j += 500 {
				msgs := make([]pgnotify.Message, 500)
				for k := range msgs {
					msgs[k] = pgnotify.Message{Channel: fmt.Sprint("o", i), Payload: fmt.Sprint(j + k)}
				}
				assert.NoError(t, pgnotify.Notify(ctx, n, msgs...))
			}
		}()
	}
	got := collect(t, ctx, m, conns*per)
	within(t, time.Minute, "the senders", wg.Wait)
	for _, c := range cs {
		require.Len(t, got[c], per)
		for j, p := range got[c] {
			require.Equal(t, fmt.Sprint(j), p)
		}
	}
}

func TestManagerMaxPendingBoundsBatches(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "bp")
	m := newManager(t, pgnotify.WithMaxPending(64))
	require.NoError(t, m.Add(ctx, c))
	// 20 MB, more than loopback socket buffers hold, so what the waiter
	// does not read must stay in the server's queue.
	const total = 20000
	pad := strings.Repeat("x", 1000)
	for i := 0; i < total; i += 2000 {
		ps := make([]string, 2000)
		for k := range ps {
			ps[k] = fmt.Sprintf("%05d", i+k) + pad
		}
		notify(t, "bp", ps...)
	}
	// The consumer has not asked yet: the waiter fills its buffer to the
	// bound and stops reading; TCP pushes back and the server keeps the
	// rest queued.
	waitUntil(t, 10*time.Second, "a full buffer", func() bool { return m.Stats().Pending >= 64 })
	assert.Equal(t, 64, m.Stats().Pending)
	var usage float64
	require.NoError(t, notifier(t).QueryRow(ctx, "SELECT pg_notification_queue_usage()").Scan(&usage))
	assert.Positive(t, usage, "the server holds the backlog")

	n := 0
	for n < total {
		ev := next(t, ctx, m)
		require.Equal(t, pgnotify.Batch, ev.Kind)
		require.LessOrEqual(t, len(ev.Notifications), 64)
		for _, x := range ev.Notifications {
			require.Equal(t, fmt.Sprintf("%05d", n)+pad, x.Payload)
			n++
		}
	}
	assert.EqualValues(t, total, m.Stats().Notifications)
}

func TestManagerMembershipChurn(t *testing.T) {
	ctx := testContext(t)
	const workers, conns, rounds = 4, 3, 15
	// A sentinel member keeps the set from emptying while workers churn.
	sentinel := listener(t, "churn")
	m := newManager(t)
	require.NoError(t, m.Add(ctx, sentinel))

	var (
		mu        sync.Mutex
		delivered = map[string]int{}
		sent      = map[string]bool{}
	)
	record := func(ns []*pgnotify.Notification, from *pgx.Conn) {
		mu.Lock()
		defer mu.Unlock()
		for _, n := range ns {
			delivered[fmt.Sprintf("%p/%s", from, n.Payload)]++
		}
	}
	consumerDone := make(chan struct{})
	cctx, stopConsumer := context.WithCancel(ctx)
	go func() {
		defer close(consumerDone)
		for ev, err := range m.Events(cctx) {
			if err != nil {
				return
			}
			if ev.Kind == pgnotify.Batch {
				record(ev.Notifications, ev.Conn)
			}
		}
	}()

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []*pgx.Conn
			for i := range conns {
				mine = append(mine, listener(t, fmt.Sprintf("churn%d_%d", w, i)))
			}
			for r := range rounds {
				c := mine[r%conns]
				if !assert.NoError(t, m.Add(ctx, c)) {
					return
				}
				p := fmt.Sprintf("w%d-r%d", w, r)
				mu.Lock()
				sent[fmt.Sprintf("%p/%s", c, p)] = true
				mu.Unlock()
				assert.NoError(t, m.Do(ctx, c, func(c *pgx.Conn) error {
					return pgnotify.Notify(ctx, c, pgnotify.Message{Channel: fmt.Sprintf("churn%d_%d", w, r%conns), Payload: p})
				}))
				if !assert.NoError(t, m.Remove(ctx, c)) {
					return
				}
				// Whatever the member had not read is the caller's now.
				for n, err := range pgnotify.Wait(ctx, c, 0) {
					if assert.NoError(t, err) {
						record([]*pgnotify.Notification{n}, c)
					}
				}
			}
		}()
	}
	within(t, 2*time.Minute, "the churn workers", wg.Wait)
	// Everything sent was received by a member or by its owner afterwards;
	// a pass over the sentinel flushes the consumer.
	waitUntil(t, 10*time.Second, "every notification delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(delivered) >= len(sent)
	})
	stopConsumer()
	receive(t, consumerDone, "the consumer to stop")
	mu.Lock()
	defer mu.Unlock()
	for k := range sent {
		assert.Equal(t, 1, delivered[k], "delivered %s", k)
	}
	assert.Len(t, delivered, len(sent))
	assert.Equal(t, []*pgx.Conn{sentinel}, m.Conns())
}

func TestManagerClose(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "close")
	m := pgnotify.NewManager()
	require.NoError(t, m.Add(ctx, c))

	blocked := make(chan error, 1)
	go func() {
		_, err := m.Next(ctx)
		blocked <- err
	}()
	require.NoError(t, m.Close(ctx))
	assert.ErrorIs(t, receive(t, blocked, "the Next blocked in Close"), pgnotify.ErrClosed)
	assert.True(t, c.IsClosed())
	_, err := m.Next(ctx)
	assert.ErrorIs(t, err, pgnotify.ErrClosed)
	assert.ErrorIs(t, m.Add(ctx, connect(t)), pgnotify.ErrClosed)
	assert.ErrorIs(t, m.Do(ctx, c, func(*pgx.Conn) error { return nil }), pgnotify.ErrClosed)
	assert.NoError(t, m.Close(ctx))
}

func TestManagerEmptyIsEOF(t *testing.T) {
	m := newManager(t)
	_, err := m.Next(testContext(t))
	assert.Equal(t, io.EOF, err)
	evs, err := m.Drain(testContext(t))
	assert.NoError(t, err)
	assert.Empty(t, evs)
}

func TestManagerDoKillsConnection(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "dokill")
	m := newManager(t)
	require.NoError(t, m.Add(ctx, c))
	boom := errors.New("boom")
	notify(t, "dokill", "received before close")
	err := m.Do(ctx, c, func(c *pgx.Conn) error {
		// The round trip receives the notification; then the connection
		// is closed under the manager.
		if err := c.PgConn().Ping(ctx); err != nil {
			return err
		}
		c.Close(ctx)
		return boom
	})
	require.ErrorIs(t, err, boom)
	ev := next(t, ctx, m)
	require.Equal(t, pgnotify.Batch, ev.Kind, "received before close, yielded before Dead")
	assert.Equal(t, "received before close", ev.Notifications[0].Payload)
	ev = next(t, ctx, m)
	assert.Equal(t, pgnotify.Dead, ev.Kind)
	assert.ErrorIs(t, ev.Err, boom)
	assert.Equal(t, "other", causeOf(m))
}

func TestManagerDoWaitsForContext(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "doctx")
	m := newManager(t)
	require.NoError(t, m.Add(ctx, c))
	hold := make(chan struct{})
	inside := make(chan struct{})
	go func() {
		_ = m.Do(ctx, c, func(*pgx.Conn) error {
			close(inside)
			<-hold
			return nil
		})
	}()
	receive(t, inside, "the first Do's function to run")
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	err := m.Do(short, c, func(*pgx.Conn) error { t.Error("ran after its context ended"); return nil })
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	close(hold)
	require.NoError(t, m.Do(ctx, c, func(c *pgx.Conn) error { return c.Ping(ctx) }))
}

func TestManagerListenTracksChannels(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "first")
	m := newManager(t, pgnotify.WithTimeout(0))
	require.NoError(t, m.Add(ctx, c))
	require.NoError(t, m.Listen(ctx, c, "second", "Third"))
	require.NoError(t, m.Unlisten(ctx, c, "first"))
	require.ErrorIs(t, m.Listen(ctx, c, ""), pgnotify.ErrInvalidChannel)
	notify(t, "Third", "3")
	notify(t, "first", "1")
	got, _ := drainPayloads(t, ctx, m)
	assert.Equal(t, []string{"3"}, got[c])

	adminExec(t, "SELECT pg_terminate_backend($1)", c.PgConn().PID())
	m.SetTimeout(pgnotify.NoTimeout) // a drain pass could end before the death
	for ev := next(t, ctx, m); ev.Kind != pgnotify.Dead; ev = next(t, ctx, m) {
	}
	g := m.Garbage()
	require.Len(t, g, 1)
	assert.Equal(t, []string{"Third", "second"}, g[0].Channels)
}
