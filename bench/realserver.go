package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// maxConnections is the throwaway server's max_connections: 1000 listeners,
// the notifier and the benchmark's own spare connections.
const maxConnections = 1100

// startReal starts a throwaway PostgreSQL cluster for a scenario, with opts
// after the benchmark's max_connections, and records its version in res.
func startReal(ctx context.Context, res *result, opts ...pgtmp.Option) (*pgtmp.Cluster, error) {
	logf("starting a throwaway PostgreSQL cluster (max_connections %d)", maxConnections)
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	c, err := pgtmp.Start(sctx, append([]pgtmp.Option{pgtmp.WithMaxConnections(maxConnections)}, opts...)...)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(sctx, c.ConnString())
	if err != nil {
		c.Stop()
		return nil, err
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(sctx, "SELECT version()").Scan(&v); err != nil {
		c.Stop()
		return nil, err
	}
	res.Machine.Postgres = v
	return c, nil
}

// stopReal stops the cluster, reporting a failure on stderr.
func stopReal(c *pgtmp.Cluster) {
	if err := c.Stop(); err != nil {
		logf("stopping the cluster: %v", err)
	}
}

// queueUsage returns pg_notification_queue_usage(), for progress messages.
func queueUsage(ctx context.Context, conn *pgx.Conn) string {
	var u float64
	if err := conn.QueryRow(ctx, "SELECT pg_notification_queue_usage()").Scan(&u); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%.4f%%", u*100)
}

// startRealWithNotifier starts the throwaway cluster and opens a connection
// to send NOTIFYs on; stop closes both.
func startRealWithNotifier(ctx context.Context, res *result) (cl *pgtmp.Cluster, notifier *pgx.Conn, stop func(), err error) {
	cl, err = startReal(ctx, res)
	if err != nil {
		return nil, nil, nil, err
	}
	notifier, err = pgx.Connect(ctx, cl.ConnString())
	if err != nil {
		stopReal(cl)
		return nil, nil, nil, err
	}
	return cl, notifier, func() {
		notifier.Close(context.Background())
		stopReal(cl)
	}, nil
}
