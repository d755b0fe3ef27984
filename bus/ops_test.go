package bus_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/bus"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
	"github.com/seed-c59d106d/pgnotify/internal/testkit"
)

// The tests here put what production puts between a Bus and its database
// in the way: a pooler, a standby, a failover, a filling queue.

// pgbouncer starts a PgBouncer in mode in front of upstream, stopped at
// cleanup (after the Buses made later, which are closed first), and
// returns its connection string.
func pgbouncer(t testing.TB, upstream, mode string) string {
	t.Helper()
	requireServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := pgtmp.StartPgBouncer(ctx, upstream, mode)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, b.Stop()) })
	return b.ConnString()
}

// startPrimaryAndReplica starts a throwaway primary of its own (the test
// may stop it) and a streaming replica of it, both stopped at cleanup.
func startPrimaryAndReplica(t *testing.T) (primary, replica *pgtmp.Cluster) {
	t.Helper()
	requireServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	primary, err := pgtmp.Start(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, primary.Stop()) })
	replica, err = primary.StartReplica(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, replica.Stop()) })
	return primary, replica
}

// syncBuffer is a log destination safe from the Bus's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Behind a transaction-mode pooler a Bus can never hold a session: each
// Subscribe dials once and fails with ErrNoSession, long before its ctx
// ends, and subscribes nothing; the Bus does not keep redialling.
func TestBusPoolerTransactionModeIsNoSession(t *testing.T) {
	ctx := testContext(t)
	d := &busDialer{url: pgbouncer(t, connString, "transaction")}
	b := newBus(t, d, bus.WithReconnect(time.Millisecond, 5*time.Millisecond))

	for i := range 2 {
		_, err := b.Subscribe(ctx, []string{"pool_tx"})
		require.ErrorIs(t, err, pgnotify.ErrNoSession, "Subscribe %d", i)
		assert.ErrorContains(t, err, "session-mode pool")
		require.NoError(t, ctx.Err(), "Subscribe %d waited for its ctx", i)
		t.Log(err)
		assert.Equal(t, int64(i+1), d.calls.Load(), "dials after Subscribe %d: the Bus redialled on its own", i)
		st := b.Stats()
		assert.False(t, st.Connected)
		assert.Zero(t, st.Subscriptions, "a failed Subscribe subscribes nothing")
		assert.Zero(t, st.Channels)
	}
}

// Behind a session-mode pooler a Bus works: subscriptions hear what is
// committed, across health checks, and after the server connection behind
// the pooler dies, Dead, Recovered, and they hear again.
func TestBusPoolerSessionModeWorks(t *testing.T) {
	ctx := testContext(t)
	// A cluster of its own: the test kills every other backend of it.
	c := ownCluster(t)
	d := &busDialer{url: pgbouncer(t, c.ConnString(), "session")}
	b := newBus(t, d, bus.WithHealthCheck(10*time.Millisecond, time.Second),
		bus.WithReconnect(5*time.Millisecond, 50*time.Millisecond))
	s1 := subscribe(t, ctx, b, []string{"pool_s1"})
	s2 := subscribe(t, ctx, b, []string{"pool_s1", "pool_s2"})
	assert.True(t, b.Stats().Connected)

	direct := testkit.Connect(t, c.ConnString(), nil)
	send := func(channel, payload string) {
		t.Helper()
		require.NoError(t, pgnotify.Notify(ctx, direct, pgnotify.Message{Channel: channel, Payload: payload}))
	}
	send("pool_s1", "one")
	assert.Equal(t, []string{"one"}, subPayloads(t, ctx, s1, 1))
	assert.Equal(t, []string{"one"}, subPayloads(t, ctx, s2, 1))
	send("pool_s2", "two")
	assert.Equal(t, []string{"two"}, subPayloads(t, ctx, s2, 1))
	assert.Zero(t, b.Stats().Deaths)

	testkit.Exec(t, c.ConnString(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND pid <> $1`, backendPID(t, ctx, direct))
	for _, s := range []*bus.Subscription{s1, s2} {
		require.Equal(t, pgnotify.Dead, subNext(t, ctx, s).Kind)
		require.Equal(t, pgnotify.Recovered, subNext(t, ctx, s).Kind)
	}
	send("pool_s2", "three")
	assert.Equal(t, []string{"three"}, subPayloads(t, ctx, s2, 1))
	assert.Equal(t, uint64(1), b.Stats().Reconnects)
}

// backendPID is the server process of a direct connection.
func backendPID(t testing.TB, ctx context.Context, conn *pgx.Conn) uint32 {
	t.Helper()
	var pid uint32
	require.NoError(t, conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid))
	return pid
}

// A Bus on a hot standby can never hear: Subscribe fails with ErrStandby,
// keeping the server's 25006, and subscribes nothing.
func TestBusStandbyRefused(t *testing.T) {
	ctx := testContext(t)
	_, replica := startPrimaryAndReplica(t)
	d := &busDialer{url: replica.ConnString()}
	b := newBus(t, d)

	_, err := b.Subscribe(ctx, []string{"standby"})
	require.ErrorIs(t, err, pgnotify.ErrStandby)
	assert.ErrorContains(t, err, "target_session_attrs=read-write")
	var pgErr *pgconn.PgError
	if assert.ErrorAs(t, err, &pgErr) {
		assert.Equal(t, "25006", pgErr.Code)
	}
	require.NoError(t, ctx.Err())
	t.Log(err)
	assert.Equal(t, int64(1), d.calls.Load())
	assert.Zero(t, b.Stats().Subscriptions)
	assert.False(t, b.Stats().Connected)
}

// After a failover, Buses dialling a multi-host connection string follow
// the promoted standby: Dead, failed attempts while no primary is up (with
// target_session_attrs=read-write the dial refuses the standby; without
// it, the reconnect lands on the standby and fails with ErrStandby,
// logged), never Recovered on the standby, then Recovered on the new
// primary, where they hear a NOTIFY.
func TestBusFollowsPromotedStandby(t *testing.T) {
	ctx := testContext(t)
	primary, replica := startPrimaryAndReplica(t)
	hosts := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/postgres?sslmode=disable",
		primary.Port(), replica.Port())

	type follower struct {
		name string
		b    *bus.Bus
		s    *bus.Subscription
		log  *syncBuffer
	}
	var fs []*follower
	for _, attrs := range []string{"&target_session_attrs=read-write", ""} {
		f := &follower{name: "attrs=" + attrs, log: &syncBuffer{}}
		f.b = newBus(t, &busDialer{url: hosts + attrs}, bus.WithReconnect(20*time.Millisecond, 200*time.Millisecond),
			bus.WithLogger(slog.New(slog.NewTextHandler(f.log, nil))))
		f.s = subscribe(t, ctx, f.b, []string{"failover"})
		fs = append(fs, f)
	}

	require.NoError(t, primary.Stop())
	for _, f := range fs {
		ev := subNext(t, ctx, f.s)
		require.Equal(t, pgnotify.Dead, ev.Kind, f.name)
	}
	// The one that may land on the standby does, and fails for it.
	anyHost := fs[1]
	waitUntil(t, 20*time.Second, "a reconnect that landed on the standby, logged", func() bool {
		return strings.Contains(anyHost.log.String(), "hot standby")
	})
	for _, f := range fs {
		st := f.b.Stats()
		assert.False(t, st.Connected, f.name)
		assert.Zero(t, st.Reconnects, f.name)
	}

	promoteCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, replica.Promote(promoteCtx))
	for _, f := range fs {
		ev := subNext(t, ctx, f.s)
		require.Equal(t, pgnotify.Recovered, ev.Kind, f.name)
		st := f.b.Stats()
		assert.True(t, st.Connected, f.name)
		assert.Equal(t, uint64(1), st.Reconnects, f.name)
	}
	newPrimary := testkit.Connect(t, replica.ConnString(), nil)
	require.NoError(t, pgnotify.Notify(ctx, newPrimary, pgnotify.Message{Channel: "failover", Payload: "on the new primary"}))
	for _, f := range fs {
		assert.Equal(t, []string{"on the new primary"}, subPayloads(t, ctx, f.s, 1), f.name)
	}
}

// Stats.QueueUsage is the server's notification queue usage, sampled by
// the health check of the Bus's connection: a session that LISTENs and
// sits in a transaction holds the queue back while notifications pile up.
func TestBusStatsQueueUsage(t *testing.T) {
	ctx := testContext(t)
	b := newBus(t, &busDialer{}, bus.WithHealthCheck(10*time.Millisecond, time.Second))
	assert.Zero(t, b.Stats().QueueUsage, "before the first health check")
	subscribe(t, ctx, b, []string{"queue_quiet"})

	holder := connect(t)
	require.NoError(t, pgnotify.Listen(ctx, holder, "queue_held"))
	_, err := holder.PgConn().Exec(ctx, "BEGIN").ReadAll()
	require.NoError(t, err)
	t.Cleanup(func() { holder.PgConn().Exec(context.Background(), "ROLLBACK").ReadAll() })
	// A queue page is 8 kB; usage counts whole pages of the 8 GB queue.
	payload := fmt.Sprintf("%01000d", 0)
	for range 20 {
		msgs := make([]pgnotify.Message, 100)
		for i := range msgs {
			msgs[i] = pgnotify.Message{Channel: "queue_held", Payload: payload + fmt.Sprint(i)}
		}
		notifyMany(t, msgs...)
	}
	waitUntil(t, 10*time.Second, "Stats.QueueUsage above 0", func() bool { return b.Stats().QueueUsage > 0 })
	u := b.Stats().QueueUsage
	t.Logf("queue usage %g with 2 MB held back", u)
	assert.Less(t, u, 0.01)
	assert.Zero(t, b.Stats().Deaths)
}
