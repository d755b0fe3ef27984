package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/bus"
)

// TestConnectFromPool: the Bus's connection, hijacked from a pool of two,
// no longer counts against it: the pool still serves two queries at once,
// and pool.Close returns at once while the Bus keeps listening.
func TestConnectFromPool(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	cfg, err := pgxpool.ParseConfig(connString)
	require.NoError(t, err)
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	poolClosed := false
	t.Cleanup(func() {
		if !poolClosed {
			pool.Close()
		}
	})

	b := bus.New(pgnotify.ConnectFromPool(pool))
	defer func() { assert.NoError(t, b.Close(ctx)) }()
	s, err := b.Subscribe(ctx, []string{"pooled"})
	require.NoError(t, err)
	defer s.Close()

	// Both at once: a third connection would block until actx ends.
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c1, err := pool.Acquire(actx)
	require.NoError(t, err)
	c2, err := pool.Acquire(actx)
	require.NoError(t, err)
	var x, y int
	require.NoError(t, c1.QueryRow(actx, "select 1").Scan(&x))
	require.NoError(t, c2.QueryRow(actx, "select 2").Scan(&y))
	assert.Equal(t, 3, x+y)
	require.NoError(t, pgnotify.Notify(actx, c1, pgnotify.Message{Channel: "pooled", Payload: "via the pool"}))
	c1.Release()
	c2.Release()

	closed := make(chan struct{})
	go func() {
		pool.Close()
		close(closed)
	}()
	select {
	case <-closed:
		poolClosed = true
	case <-time.After(10 * time.Second):
		t.Fatal("pool.Close waits for the Bus's connection")
	}
	assert.Equal(t, []string{"via the pool"}, subPayloads(t, ctx, s, 1))

	// The Bus still listens after its pool is gone.
	notifyMany(t, pgnotify.Message{Channel: "pooled", Payload: "after"})
	assert.Equal(t, []string{"after"}, subPayloads(t, ctx, s, 1))
}

// TestSubscribeFailsOnPoolWithOnNotification: a pool whose config sets
// OnNotification gives connections that never hear a notification:
// Subscribe fails at once and says why, and a later one again.
func TestSubscribeFailsOnPoolWithOnNotification(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	cfg, err := pgxpool.ParseConfig(connString)
	require.NoError(t, err)
	cfg.ConnConfig.OnNotification = func(*pgconn.PgConn, *pgconn.Notification) {}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()

	b := bus.New(pgnotify.ConnectFromPool(pool), bus.WithReconnect(5*time.Millisecond, 50*time.Millisecond))
	defer func() { assert.NoError(t, b.Close(ctx)) }()
	for range 2 {
		s, err := b.Subscribe(ctx, []string{"deaf"})
		if !assert.Error(t, err) {
			s.Close()
			continue
		}
		assert.NotErrorIs(t, err, context.DeadlineExceeded, "failed only when ctx ended")
		assert.Contains(t, err.Error(), "OnNotification")
	}
	assert.False(t, b.Stats().Connected)
}

// TestClosedPoolEndsTheBus: once its pool is closed, the Bus cannot
// replace a dead connection: every subscription gets Dead, then an error
// that matches ErrClosed and names the closed pool, and so does Subscribe.
func TestClosedPoolEndsTheBus(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	pool, err := pgxpool.New(ctx, connString)
	require.NoError(t, err)
	b := bus.New(pgnotify.ConnectFromPool(pool), bus.WithReconnect(5*time.Millisecond, 50*time.Millisecond))
	defer func() { assert.NoError(t, b.Close(ctx)) }()
	s1, err := b.Subscribe(ctx, []string{"pool_a"})
	require.NoError(t, err)
	defer s1.Close()
	s2, err := b.Subscribe(ctx, []string{"pool_b"})
	require.NoError(t, err)
	defer s2.Close()

	pool.Close()
	adminExec(t, "select pg_terminate_backend($1)", b.Stats().PID)
	for _, s := range []*bus.Subscription{s1, s2} {
		ev := subNext(t, ctx, s)
		require.Equal(t, pgnotify.Dead, ev.Kind)
		wait, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := s.Next(wait)
		cancel()
		require.ErrorIs(t, err, pgnotify.ErrClosed, "the subscription goes on waiting for a pool that is closed")
		assert.Contains(t, err.Error(), "closed pool")
	}
	_, err = b.Subscribe(ctx, []string{"pool_c"})
	assert.ErrorIs(t, err, pgnotify.ErrClosed)
	assert.False(t, b.Stats().Connected)
}
