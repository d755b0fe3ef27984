package pgnotifytest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// startPrimaryAndReplica starts a throwaway primary of its own (the test
// stops it) and a streaming replica of it, both stopped at cleanup.
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

// A standby can never hear: Listen and Add refuse it with ErrStandby,
// keeping the server's 25006.
func TestStandbyRefused(t *testing.T) {
	ctx := testContext(t)
	_, replica := startPrimaryAndReplica(t)

	c := connectTo(t, replica.ConnString())
	err := pgnotify.Listen(ctx, c, "standby")
	require.ErrorIs(t, err, pgnotify.ErrStandby)
	assert.ErrorContains(t, err, "target_session_attrs=read-write")
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	assert.Equal(t, "25006", pgErr.Code)
	t.Log(err)

	m := newManager(t)
	err = m.Add(ctx, connectTo(t, replica.ConnString()))
	require.ErrorIs(t, err, pgnotify.ErrStandby)
	assert.Empty(t, m.Conns())
	t.Log(err)
}

// After a failover, Managers dialling a multi-host connection string
// follow the promoted standby: Dead, failed attempts while no primary is
// up (with target_session_attrs=read-write the dial refuses the standby;
// without it, the dial lands on the standby and the attempt fails with
// ErrStandby, logged and counted), then Recovered on the new primary,
// which they hear.
func TestFailoverFollowsPromotedStandby(t *testing.T) {
	ctx := testContext(t)
	primary, replica := startPrimaryAndReplica(t)
	hosts := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/postgres?sslmode=disable",
		primary.Port(), replica.Port())

	type follower struct {
		name string
		m    *pgnotify.Manager
		conn *pgx.Conn
		log  *syncBuffer
	}
	var fs []*follower
	for _, attrs := range []string{"&target_session_attrs=read-write", ""} {
		f := &follower{name: "attrs=" + attrs, log: &syncBuffer{}}
		f.conn = connectTo(t, hosts+attrs)
		require.NoError(t, pgnotify.Listen(ctx, f.conn, "failover"))
		f.m = newManager(t, pgnotify.WithReconnect(pgnotify.Redial, 20*time.Millisecond, 200*time.Millisecond),
			pgnotify.WithLogger(slog.New(slog.NewTextHandler(f.log, nil))))
		require.NoError(t, f.m.Add(ctx, f.conn))
		fs = append(fs, f)
	}

	require.NoError(t, primary.Stop())
	for _, f := range fs {
		ev := untilKind(t, ctx, f.m, pgnotify.Dead)
		assert.Equal(t, f.conn, ev.Conn, f.name)
	}
	// Both keep trying while no primary is up; the one that may land on
	// the standby does, and fails for it.
	for _, f := range fs {
		waitUntil(t, 20*time.Second, f.name+": failed reconnects", func() bool { return f.m.Stats().ReconnectFailures >= 3 })
		assert.Zero(t, f.m.Stats().Recoveries, f.name)
	}
	anyHost := fs[1]
	waitUntil(t, 20*time.Second, "a reconnect that landed on the standby, logged", func() bool {
		return strings.Contains(anyHost.log.String(), "hot standby")
	})
	assert.Contains(t, anyHost.log.String(), "reconnect failed")

	promoteCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, replica.Promote(promoteCtx))
	newPrimary := connectTo(t, replica.ConnString())
	for _, f := range fs {
		rec := untilKind(t, ctx, f.m, pgnotify.Recovered)
		assert.Equal(t, f.conn, rec.Replaced, f.name)
		assert.Equal(t, replica.Port(), rec.Conn.PgConn().Conn().RemoteAddr().(*net.TCPAddr).Port, f.name)
	}
	require.NoError(t, pgnotify.Notify(ctx, newPrimary, pgnotify.Message{Channel: "failover", Payload: "on the new primary"}))
	for _, f := range fs {
		ev := untilKind(t, ctx, f.m, pgnotify.Batch)
		assert.Equal(t, "on the new primary", ev.Notifications[0].Payload, f.name)
		t.Logf("%s: %d failed reconnects before the promotion", f.name, f.m.Stats().ReconnectFailures)
	}
}
