package pgnotifytest

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/faultproxy"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
	"github.com/seed-c59d106d/pgnotify/internal/testkit"
	"github.com/seed-c59d106d/pgnotify/pgtest"
)

// proxied connects to the test server through a fault proxy, listening on
// channels, and returns the connection with its link.
func proxied(t testing.TB, p *faultproxy.Proxy, channels ...string) (*pgx.Conn, *faultproxy.Link) {
	t.Helper()
	ctx := testContext(t)
	c, err := pgx.Connect(ctx, p.ConnString(connString))
	require.NoError(t, err)
	t.Cleanup(func() {
		closeManagers(t)
		// pgx's background close waits for the server's goodbye, which a
		// blackholed link never passes on: cut it first.
		if l := p.LinkFor(c.PgConn().Conn().LocalAddr()); l != nil {
			l.Cut()
		}
		closeConn(t, c)
	})
	require.NoError(t, pgnotify.Listen(ctx, c, channels...))
	l := p.LinkFor(c.PgConn().Conn().LocalAddr())
	require.NotNil(t, l)
	return c, l
}

// behindProxy connects to the test server through a pgtest.Proxy of its
// own, listening on channels: the proxy's Cut and Blackhole act on this one
// connection, as a user's test would break one.
func behindProxy(t testing.TB, channels ...string) (*pgx.Conn, *pgtest.Proxy) {
	t.Helper()
	requireServer(t)
	p := pgtest.NewProxy(t, connString)
	c := testkit.Connect(t, p.ConnString(), nil)
	t.Cleanup(func() {
		closeManagers(t)
		// pgx's background close of a connection that gave up on a query
		// waits for the server's goodbye, which a blackhole holds back.
		p.Resume()
		p.Cut()
	})
	require.NoError(t, pgnotify.Listen(testContext(t), c, channels...))
	return c, p
}

// newProxy starts a fault proxy to the test server, for tests that need a
// proxy's links one by one; behindProxy is the simpler way.
func newProxy(t testing.TB) *faultproxy.Proxy {
	t.Helper()
	requireServer(t)
	cfg, err := pgx.ParseConfig(connString)
	require.NoError(t, err)
	p, err := faultproxy.New(fmt.Sprintf("%s:%d", cfg.Host, cfg.Port))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, p.Close()) })
	return p
}

// ownCluster starts a cluster for one test, for faults that would disturb
// the shared server.
func ownCluster(t testing.TB) *pgtmp.Cluster {
	t.Helper()
	requireServer(t)
	c, err := pgtmp.Start(testContext(t))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, c.Stop()) })
	return c
}
