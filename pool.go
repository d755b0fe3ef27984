package pgnotify

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// A ConnectFunc opens a new connection to the database: for a bus.Bus
// (package github.com/seed-c59d106d/pgnotify/bus), its first connection
// and each replacement; for a [Manager], wrapped as a [DialFunc] (see
// [ConnectFromPool]). The connection must keep pgx's default
// notification handling (no OnNotification in its config). Whoever it is
// given to closes it.
type ConnectFunc func(ctx context.Context) (*pgx.Conn, error)

// ConnectFromPool returns a [ConnectFunc] that takes a dedicated
// connection out of an application's pool: it acquires one and hijacks it,
// so the pool forgets it. The pool never hands the listening session to
// anyone else, it may open another connection in its place (the listening
// one no longer counts against MaxConns), and pool.Close does not wait for
// it. Whoever holds the connection closes it: a bus.Bus, or a [Manager].
//
// For a Manager, call it for [Manager.Add], and wrap it for
// [WithReconnect]:
//
//	connect := pgnotify.ConnectFromPool(pool)
//	dial := func(ctx context.Context, _ pgnotify.Garbage) (*pgx.Conn, error) { return connect(ctx) }
//
// The pool's connection config must leave OnNotification unset.
func ConnectFromPool(pool *pgxpool.Pool) ConnectFunc {
	return func(ctx context.Context) (*pgx.Conn, error) {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return nil, fmt.Errorf("pgnotify: acquire a connection from the pool: %w", err)
		}
		return c.Hijack(), nil
	}
}
