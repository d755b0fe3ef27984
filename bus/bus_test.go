package bus_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/bus"
)

// busDialer is a ConnectFunc for a Bus that counts its dials, remembers the
// backend PIDs it opened, and fails while down is set.
type busDialer struct {
	url    string
	mutate func(*pgx.ConnConfig)
	down   atomic.Bool
	calls  atomic.Int64
	mu     sync.Mutex
	pids   []uint32
}

func (d *busDialer) connect(ctx context.Context) (*pgx.Conn, error) {
	d.calls.Add(1)
	if d.down.Load() {
		// A port nobody listens on: a real connection refused.
		return pgx.Connect(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=5")
	}
	cfg, err := pgx.ParseConfig(d.url)
	if err != nil {
		return nil, err
	}
	if d.mutate != nil {
		d.mutate(cfg)
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		d.mu.Lock()
		d.pids = append(d.pids, c.PgConn().PID())
		d.mu.Unlock()
	}
	return c, err
}

func (d *busDialer) lastPID() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pids[len(d.pids)-1]
}

// newBus returns a Bus on d, closed when t ends (and checked to close).
func newBus(t testing.TB, d *busDialer, opts ...bus.Option) *bus.Bus {
	t.Helper()
	requireServer(t)
	if d.url == "" {
		d.url = connString
	}
	b := bus.New(d.connect, opts...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, b.Close(ctx))
	})
	return b
}

func subscribe(t testing.TB, ctx context.Context, b *bus.Bus, channels []string, opts ...bus.SubscribeOption) *bus.Subscription {
	t.Helper()
	s, err := b.Subscribe(ctx, channels, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// subNext returns the next event of s, failing t on error.
func subNext(t testing.TB, ctx context.Context, s *bus.Subscription) pgnotify.Event {
	t.Helper()
	ev, err := s.Next(ctx)
	require.NoError(t, err)
	require.Nil(t, ev.Conn, "a subscription's event names no connection")
	require.Nil(t, ev.Replaced)
	return ev
}

// subPayloads reads Batch events of s until want notifications arrived,
// failing on any other kind.
func subPayloads(t testing.TB, ctx context.Context, s *bus.Subscription, want int) []string {
	t.Helper()
	var got []string
	for len(got) < want {
		ev := subNext(t, ctx, s)
		require.Equal(t, pgnotify.Batch, ev.Kind, "event %+v after %d notifications", ev, len(got))
		for _, n := range ev.Notifications {
			got = append(got, n.Payload)
		}
	}
	return got
}

// notifyMany sends msgs in one transaction from the test's notifier.
func notifyMany(t testing.TB, msgs ...pgnotify.Message) {
	t.Helper()
	require.NoError(t, pgnotify.Notify(testContext(t), notifier(t), msgs...))
}

func messagesOn(channel, prefix string, n int) []pgnotify.Message {
	out := make([]pgnotify.Message, n)
	for i := range out {
		out[i] = pgnotify.Message{Channel: channel, Payload: fmt.Sprintf("%s%d", prefix, i)}
	}
	return out
}

// assertNotListened proves that the Bus's connection listens on none of
// channels, by a round trip: one transaction notifies each of them and
// then probe, which s listens on. The server sends them in that order, so
// once s has the probe, anything on channels would have been received
// before it; the Bus's Received count says nothing was.
func assertNotListened(t testing.TB, ctx context.Context, b *bus.Bus, s *bus.Subscription, probe string, channels ...string) {
	t.Helper()
	before := b.Stats().Received
	var msgs []pgnotify.Message
	for _, c := range channels {
		msgs = append(msgs, pgnotify.Message{Channel: c, Payload: "must not arrive"})
	}
	msgs = append(msgs, pgnotify.Message{Channel: probe, Payload: "probe"})
	notifyMany(t, msgs...)
	assert.Equal(t, []string{"probe"}, subPayloads(t, ctx, s, 1))
	assert.Equal(t, before+1, b.Stats().Received, "the Bus's connection still listens on one of %q", channels)
}

func TestBusDeliversItsChannelsInOrderExactlyOnce(t *testing.T) {
	ctx := testContext(t)
	d := &busDialer{}
	b := newBus(t, d)
	sa := subscribe(t, ctx, b, []string{"bus_a"})
	sb := subscribe(t, ctx, b, []string{"Bus B"})
	sab := subscribe(t, ctx, b, []string{"bus_a", "Bus B", "bus_a"}, bus.WithBuffer(0))
	assert.Equal(t, []string{"bus_a", "Bus B"}, sab.Channels())

	const n = 300
	var msgs, wantAB []pgnotify.Message
	for i := range n {
		a := pgnotify.Message{Channel: "bus_a", Payload: fmt.Sprint("a", i)}
		bb := pgnotify.Message{Channel: "Bus B", Payload: fmt.Sprint("b", i)}
		msgs = append(msgs, a, bb, pgnotify.Message{Channel: "bus b", Payload: "other"}, pgnotify.Message{Channel: "bus_c", Payload: "other"})
		wantAB = append(wantAB, a, bb)
	}
	notifyMany(t, msgs...)
	assert.Equal(t, seq("a", n), subPayloads(t, ctx, sa, n))
	assert.Equal(t, seq("b", n), subPayloads(t, ctx, sb, n))
	var gotAB []pgnotify.Message
	for len(gotAB) < 2*n {
		ev := subNext(t, ctx, sab)
		require.Equal(t, pgnotify.Batch, ev.Kind)
		gotAB = append(gotAB, messages(ev.Notifications)...)
	}
	assert.Equal(t, wantAB, gotAB)

	// One shared *Notification per notification across subscriptions.
	notifyMany(t, pgnotify.Message{Channel: "bus_a", Payload: "shared"})
	x, y := subNext(t, ctx, sa), subNext(t, ctx, sab)
	require.Len(t, x.Notifications, 1)
	require.Len(t, y.Notifications, 1)
	assert.Same(t, x.Notifications[0], y.Notifications[0])

	st := b.Stats()
	assert.Equal(t, 3, st.Subscriptions)
	assert.Equal(t, 2, st.Channels)
	assert.Equal(t, int64(1), d.calls.Load(), "one connection for every subscription")
}

func TestBusSubscribeRejectsBadNamesAndClosedBus(t *testing.T) {
	ctx := testContext(t)
	d := &busDialer{}
	b := newBus(t, d)
	for _, bad := range [][]string{{""}, {"ok", strings.Repeat("x", 64)}, {"nul\x00"}, {"\xff"}} {
		_, err := b.Subscribe(ctx, bad)
		assert.ErrorIs(t, err, pgnotify.ErrInvalidChannel, "%q", bad)
	}
	assert.Zero(t, d.calls.Load(), "an invalid name dials nothing")
	require.NoError(t, b.Close(ctx))
	_, err := b.Subscribe(ctx, []string{"ok"})
	assert.ErrorIs(t, err, pgnotify.ErrClosed)
	assert.Zero(t, d.calls.Load())
}

// TestBusUnlistensLastSubscriber: a channel stays listened while one
// subscription wants it, and closing the last one UNLISTENs it before
// Close returns.
func TestBusUnlistensLastSubscriber(t *testing.T) {
	ctx := testContext(t)
	b := newBus(t, &busDialer{})
	probe := subscribe(t, ctx, b, []string{"probe"})
	s1 := subscribe(t, ctx, b, []string{"shared", "only1"})
	s2 := subscribe(t, ctx, b, []string{"shared"})
	assert.Equal(t, 3, b.Stats().Channels)

	require.NoError(t, s1.Close())
	assertNotListened(t, ctx, b, probe, "probe", "only1")
	notifyMany(t, pgnotify.Message{Channel: "shared", Payload: "still"})
	assert.Equal(t, []string{"still"}, subPayloads(t, ctx, s2, 1))

	require.NoError(t, s2.Close())
	require.NoError(t, s2.Close(), "Close again")
	assertNotListened(t, ctx, b, probe, "probe", "shared", "only1")
	assert.Equal(t, 1, b.Stats().Channels)
	_, err := s2.Next(ctx)
	assert.ErrorIs(t, err, pgnotify.ErrClosed)
}

// TestBusChurn: 8 goroutines subscribe and close at once on shared and
// own channels. Each Subscribe is proven active by a notification sent
// after it returned; a stable subscription gets every notification of its
// channel exactly once; at the end the connection listens on nothing else.
func TestBusChurn(t *testing.T) {
	ctx := testContext(t)
	b := newBus(t, &busDialer{})
	stable := subscribe(t, ctx, b, []string{"churn0"})
	const workers, rounds = 8, 100
	senders := make([]*pgx.Conn, workers)
	for i := range senders {
		senders[i] = connect(t)
	}
	var sentOnStable atomic.Int64
	all := []string{"churn0", "churn1", "churn2", "churn3"}
	for w := range workers {
		for k := range 3 {
			all = append(all, fmt.Sprintf("own%d_%d", w, k))
		}
	}

	var g errgroup.Group
	for w := range workers {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for r := range rounds {
				chs := []string{fmt.Sprintf("churn%d", rng.IntN(3)), fmt.Sprintf("own%d_%d", w, r%3)}
				s, err := b.Subscribe(ctx, chs, bus.WithBuffer(100000))
				if err != nil {
					return fmt.Errorf("worker %d round %d: subscribe: %w", w, r, err)
				}
				var msgs []pgnotify.Message
				for _, c := range chs {
					msgs = append(msgs, pgnotify.Message{Channel: c, Payload: fmt.Sprintf("%d/%d", w, r)})
				}
				if chs[0] == "churn0" {
					sentOnStable.Add(1)
				}
				if err := pgnotify.Notify(ctx, senders[w], msgs...); err != nil {
					return err
				}
				for seen := 0; seen < len(chs); {
					ev, err := s.Next(ctx)
					if err != nil {
						return fmt.Errorf("worker %d round %d: its own notification did not arrive: %w", w, r, err)
					}
					if ev.Kind != pgnotify.Batch {
						return fmt.Errorf("worker %d round %d: unexpected %v", w, r, ev.Kind)
					}
					for _, n := range ev.Notifications {
						if n.Payload == fmt.Sprintf("%d/%d", w, r) {
							seen++
						}
					}
				}
				if err := s.Close(); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())

	st := b.Stats()
	assert.Equal(t, 1, st.Subscriptions)
	assert.Equal(t, 1, st.Channels)
	got := map[string]int{}
	for n := int64(0); n < sentOnStable.Load(); {
		ev := subNext(t, ctx, stable)
		require.Equal(t, pgnotify.Batch, ev.Kind)
		for _, x := range ev.Notifications {
			got[x.Payload]++
			n++
		}
	}
	for p, k := range got {
		assert.Equal(t, 1, k, "payload %s delivered %d times", p, k)
	}
	assertNotListened(t, ctx, b, stable, "churn0", all[1:]...)
}

// TestBusSubscribeCancelledKeepsConnection: a Subscribe whose ctx ends at
// any moment returns ctx's error, closes nothing, and leaves nothing
// listened.
func TestBusSubscribeCancelledKeepsConnection(t *testing.T) {
	ctx := testContext(t)
	d := &busDialer{}
	b := newBus(t, d)
	warm := subscribe(t, ctx, b, []string{"warm"})

	dead, cancel := context.WithCancel(ctx)
	cancel()
	_, err := b.Subscribe(dead, []string{"never"})
	require.ErrorIs(t, err, context.Canceled)

	var tried []string
	failed := 0
	for i := range 60 {
		ch := fmt.Sprint("cancel", i)
		tried = append(tried, ch)
		cctx, cancel := context.WithTimeout(ctx, time.Duration(i)*20*time.Microsecond)
		s, err := b.Subscribe(cctx, []string{ch, "warm"})
		cancel()
		if err != nil {
			require.ErrorIs(t, err, context.DeadlineExceeded)
			failed++
			continue
		}
		require.NoError(t, s.Close())
	}
	t.Logf("%d of 60 Subscribes ended by their ctx", failed)
	st := b.Stats()
	assert.Zero(t, st.Deaths, "a cancelled Subscribe closed the connection")
	assert.Equal(t, int64(1), d.calls.Load())
	assert.Equal(t, 1, st.Subscriptions)
	assertNotListened(t, ctx, b, warm, "warm", append(tried, "never")...)
}

// TestBusSubscribeWaitsForDatabase: with the database unreachable,
// Subscribe waits until its ctx ends and says why; once the database is
// back, a waiting Subscribe returns a working subscription.
func TestBusSubscribeWaitsForDatabase(t *testing.T) {
	ctx := testContext(t)
	d := &busDialer{}
	d.down.Store(true)
	b := newBus(t, d, bus.WithReconnect(5*time.Millisecond, 50*time.Millisecond))

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := b.Subscribe(short, []string{"down"})
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "connection attempt")

	type result struct {
		s   *bus.Subscription
		err error
	}
	res := make(chan result, 1)
	go func() {
		s, err := b.Subscribe(ctx, []string{"down"})
		res <- result{s, err}
	}()
	start := d.calls.Load()
	waitUntil(t, 10*time.Second, "two more dial attempts", func() bool { return d.calls.Load() >= start+2 })
	d.down.Store(false)
	r := <-res
	require.NoError(t, r.err)
	defer r.s.Close()
	notifyMany(t, pgnotify.Message{Channel: "down", Payload: "up again"})
	assert.Equal(t, []string{"up again"}, subPayloads(t, ctx, r.s, 1))
}

// TestBusDropOldestExactDropped: a subscription that does not read keeps
// the newest of its bound and reports exactly how many it lost, before
// them; one that reads loses nothing.
func TestBusDropOldestExactDropped(t *testing.T) {
	ctx := testContext(t)
	b := newBus(t, &busDialer{})
	slow := subscribe(t, ctx, b, []string{"lossy"}, bus.WithBuffer(10))
	fast := subscribe(t, ctx, b, []string{"lossy"}, bus.WithBuffer(1000))
	notifyMany(t, messagesOn("lossy", "", 100)...)
	assert.Equal(t, seq("", 100), subPayloads(t, ctx, fast, 100))
	waitUntil(t, 10*time.Second, "delivery to both", func() bool { return b.Stats().Delivered == 200 })

	ev := subNext(t, ctx, slow)
	require.Equal(t, pgnotify.Lagged, ev.Kind)
	assert.Equal(t, 90, ev.Dropped)
	assert.Equal(t, seq("", 100)[90:], subPayloads(t, ctx, slow, 10))
	assert.Equal(t, uint64(90), b.Stats().Dropped)

	notifyMany(t, messagesOn("lossy", "again", 5)...)
	assert.Equal(t, seq("again", 5), subPayloads(t, ctx, slow, 5), "no Lagged without a loss")
}

// TestBusStalledSubscriberDoesNotSlowOthers: under DropOldest a
// subscription that never reads holds nothing back: the other gets every
// notification while the stalled one keeps only its bound.
func TestBusStalledSubscriberDoesNotSlowOthers(t *testing.T) {
	ctx := testContext(t)
	b := newBus(t, &busDialer{})
	stalled := subscribe(t, ctx, b, []string{"flood"}, bus.WithBuffer(8))
	fast := subscribe(t, ctx, b, []string{"flood"}, bus.WithBuffer(20000))
	const total = 20000
	for i := 0; i < total; i += 1000 {
		msgs := make([]pgnotify.Message, 1000)
		for j := range msgs {
			msgs[j] = pgnotify.Message{Channel: "flood", Payload: fmt.Sprint(i + j)}
		}
		notifyMany(t, msgs...)
	}
	assert.Equal(t, seq("", total), subPayloads(t, ctx, fast, total))
	waitUntil(t, 10*time.Second, "delivery to both", func() bool { return b.Stats().Delivered == 2*total })
	ev := subNext(t, ctx, stalled)
	require.Equal(t, pgnotify.Lagged, ev.Kind)
	assert.Equal(t, total-8, ev.Dropped)
	assert.Equal(t, seq("", total)[total-8:], subPayloads(t, ctx, stalled, 8))
}

// TestBusOverflowBlockLossless: a buffer of 2 under OverflowBlock gets
// thousands of notifications, all, in order, while the Bus's own pending
// bound is small too.
func TestBusOverflowBlockLossless(t *testing.T) {
	ctx := testContext(t)
	b := newBus(t, &busDialer{}, bus.WithMaxPending(16))
	s := subscribe(t, ctx, b, []string{"lossless"}, bus.WithBuffer(2), bus.WithOverflow(bus.OverflowBlock))
	const total = 5000
	for i := 0; i < total; i += 500 {
		msgs := make([]pgnotify.Message, 500)
		for j := range msgs {
			msgs[j] = pgnotify.Message{Channel: "lossless", Payload: fmt.Sprint(i + j)}
		}
		notifyMany(t, msgs...)
	}
	var got []string
	for len(got) < total {
		ev := subNext(t, ctx, s)
		require.Equal(t, pgnotify.Batch, ev.Kind)
		require.LessOrEqual(t, len(ev.Notifications), 2)
		for _, n := range ev.Notifications {
			got = append(got, n.Payload)
		}
	}
	assert.Equal(t, seq("", total), got)
	assert.Zero(t, b.Stats().Dropped)
}

// TestBusOverflowBlockCloseReleases: a blocking subscription that stops
// reading holds the Bus until it is closed; then the others get
// everything.
func TestBusOverflowBlockCloseReleases(t *testing.T) {
	ctx := testContext(t)
	b := newBus(t, &busDialer{}, bus.WithMaxPending(16))
	stuck := subscribe(t, ctx, b, []string{"held"}, bus.WithBuffer(1), bus.WithOverflow(bus.OverflowBlock))
	other := subscribe(t, ctx, b, []string{"held"}, bus.WithBuffer(1), bus.WithOverflow(bus.OverflowBlock))
	notifyMany(t, messagesOn("held", "", 500)...)
	// stuck took one and holds the Bus with the rest.
	waitUntil(t, 10*time.Second, "the first delivery", func() bool { return b.Stats().Delivered > 0 })
	require.NoError(t, stuck.Close())
	got := subPayloads(t, ctx, other, 500)
	assert.Equal(t, seq("", 500), got)
}

// busRecovery checks that every subscription gets Dead then Recovered, and
// nothing but those, and then every notification sent after.
func busRecovery(t *testing.T, ctx context.Context, subs []*bus.Subscription, fault func()) {
	fault()
	for i, s := range subs {
		ev := subNext(t, ctx, s)
		require.Equal(t, pgnotify.Dead, ev.Kind, "subscription %d", i)
		require.Error(t, ev.Err)
		ev = subNext(t, ctx, s)
		require.Equal(t, pgnotify.Recovered, ev.Kind, "subscription %d", i)
	}
}

func TestBusTerminatedBackendDeadThenRecovered(t *testing.T) {
	ctx := testContext(t)
	d := &busDialer{}
	b := newBus(t, d, bus.WithReconnect(5*time.Millisecond, 100*time.Millisecond))
	sa := subscribe(t, ctx, b, []string{"t_a"})
	sb := subscribe(t, ctx, b, []string{"t_b"})
	sab := subscribe(t, ctx, b, []string{"t_a", "t_b"})
	before := d.lastPID()
	busRecovery(t, ctx, []*bus.Subscription{sa, sb, sab}, func() {
		adminExec(t, "select pg_terminate_backend($1)", before)
	})
	assert.NotEqual(t, before, d.lastPID())
	st := b.Stats()
	assert.Equal(t, uint64(1), st.Deaths)
	assert.Equal(t, uint64(1), st.Reconnects)
	assert.Equal(t, 2, st.Channels)

	notifyMany(t, append(messagesOn("t_a", "a", 50), messagesOn("t_b", "b", 50)...)...)
	assert.Equal(t, seq("a", 50), subPayloads(t, ctx, sa, 50))
	assert.Equal(t, seq("b", 50), subPayloads(t, ctx, sb, 50))
	assert.Equal(t, append(seq("a", 50), seq("b", 50)...), subPayloads(t, ctx, sab, 100))
}

func TestBusTerminatedBackendCause(t *testing.T) {
	ctx := testContext(t)
	d := &busDialer{}
	b := newBus(t, d, bus.WithReconnect(5*time.Millisecond, 100*time.Millisecond))
	s := subscribe(t, ctx, b, []string{"cause"})
	adminExec(t, "select pg_terminate_backend($1)", d.lastPID())
	ev := subNext(t, ctx, s)
	require.Equal(t, pgnotify.Dead, ev.Kind)
	var pgErr *pgconn.PgError
	if assert.ErrorAs(t, ev.Err, &pgErr) {
		assert.Equal(t, "57P01", pgErr.Code)
	}
}

// TestBusServerRestart: after a restart every subscription sees Dead then
// Recovered; one subscribing during the outage is served too; nothing sent
// after Recovered is lost.
func TestBusServerRestart(t *testing.T) {
	for _, mode := range []string{"fast", "immediate"} {
		t.Run(mode, func(t *testing.T) {
			ctx := testContext(t)
			cluster := ownCluster(t)
			d := &busDialer{url: cluster.ConnString()}
			b := newBus(t, d, bus.WithReconnect(5*time.Millisecond, 100*time.Millisecond))
			subs := []*bus.Subscription{
				subscribe(t, ctx, b, []string{"r_a"}),
				subscribe(t, ctx, b, []string{"r_b"}),
				subscribe(t, ctx, b, []string{"r_a", "r_b"}),
			}
			gone := subscribe(t, ctx, b, []string{"r_gone"})
			late := make(chan *bus.Subscription, 1)
			lateErr := make(chan error, 1)
			busRecovery(t, ctx, subs, func() {
				go func() {
					s, err := b.Subscribe(ctx, []string{"r_late"})
					lateErr <- err
					late <- s
				}()
				require.NoError(t, gone.Close())
				require.NoError(t, cluster.Restart(ctx, mode))
			})
			require.NoError(t, <-lateErr)
			ls := <-late
			defer ls.Close()

			sender, err := pgx.Connect(ctx, cluster.ConnString())
			require.NoError(t, err)
			defer closeConn(t, sender)
			msgs := append(messagesOn("r_a", "a", 100), messagesOn("r_b", "b", 100)...)
			msgs = append(msgs, pgnotify.Message{Channel: "r_gone", Payload: "x"}, pgnotify.Message{Channel: "r_late", Payload: "late"})
			require.NoError(t, pgnotify.Notify(ctx, sender, msgs...))
			assert.Equal(t, seq("a", 100), subPayloads(t, ctx, subs[0], 100))
			assert.Equal(t, seq("b", 100), subPayloads(t, ctx, subs[1], 100))
			assert.Equal(t, append(seq("a", 100), seq("b", 100)...), subPayloads(t, ctx, subs[2], 200))
			var lateGot []string
			for len(lateGot) == 0 {
				ev := subNext(t, ctx, ls)
				if ev.Kind == pgnotify.Batch {
					lateGot = append(lateGot, messages(ev.Notifications)[0].Payload)
				}
			}
			assert.Equal(t, []string{"late"}, lateGot)
			st := b.Stats()
			assert.Equal(t, 3, st.Channels, "r_gone was closed during the outage")
			assert.Equal(t, uint64(len(msgs)-1), st.Received, "r_gone is not listened after the recovery")
		})
	}
}

// TestBusCloseWhileNextBlocked: closing a subscription, or the Bus,
// releases a blocked Next with ErrClosed; Events yields it once, last.
func TestBusCloseWhileNextBlocked(t *testing.T) {
	ctx := testContext(t)
	b := newBus(t, &busDialer{})
	s1 := subscribe(t, ctx, b, []string{"blocked1"})
	s2 := subscribe(t, ctx, b, []string{"blocked2"})

	errs := make(chan error, 1)
	go func() {
		_, err := s1.Next(ctx)
		errs <- err
	}()
	require.NoError(t, s1.Close())
	assert.ErrorIs(t, <-errs, pgnotify.ErrClosed)

	evErrs := make(chan []error, 1)
	go func() {
		var got []error
		for _, err := range s2.Events(ctx) {
			got = append(got, err)
		}
		evErrs <- got
	}()
	require.NoError(t, b.Close(ctx))
	got := <-evErrs
	require.Len(t, got, 1)
	assert.ErrorIs(t, got[0], pgnotify.ErrClosed)
	assert.NoError(t, s2.Close())
	assert.NoError(t, b.Close(ctx), "Close again")
}

// TestBusCloseLeavesNothing: after Bus.Close no goroutine of the Bus and no
// backend of its connection remain.
func TestBusCloseLeavesNothing(t *testing.T) {
	ctx := testContext(t)
	admin := connect(t)
	ignore := goleak.IgnoreCurrent()
	app := fmt.Sprintf("pgnotify-bus-%d", rand.Int64())
	d := &busDialer{mutate: func(c *pgx.ConnConfig) { c.RuntimeParams["application_name"] = app }}
	b := newBus(t, d, bus.WithReconnect(5*time.Millisecond, 50*time.Millisecond))
	s := subscribe(t, ctx, b, []string{"leave"})
	backends := func() int {
		var n int
		require.NoError(t, admin.QueryRow(ctx, "select count(*) from pg_stat_activity where application_name = $1", app).Scan(&n))
		return n
	}
	assert.Equal(t, 1, backends())
	// A death and a recovery first, so the replacement is closed too.
	adminExec(t, "select pg_terminate_backend($1)", d.lastPID())
	for ev := subNext(t, ctx, s); ev.Kind != pgnotify.Recovered; ev = subNext(t, ctx, s) {
	}
	require.NoError(t, b.Close(ctx))
	waitUntil(t, 10*time.Second, "the Bus's backends to exit", func() bool { return backends() == 0 })
	goleak.VerifyNone(t, ignore)
}
