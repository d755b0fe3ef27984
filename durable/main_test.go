package durable_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/seed-c59d106d/pgnotify/internal/leakcheck"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// cluster and connString are the server every test here uses, started by
// TestMain; both are unset under -short. Set before any test runs; read-only
// after.
var (
	cluster    *pgtmp.Cluster
	connString string
)

// TestMain starts a throwaway cluster ready for logical replication and,
// after the tests, fails the run if any goroutine is left behind. These tests
// restart the server and need wal_level = logical, so they always start their
// own cluster, even when PGNOTIFY_TEST_DATABASE_URL names a server. Missing
// server binaries fail the run: without a server these tests would prove
// nothing. A test binary started with childEnv set is a consumer process for
// the crash tests, not a test run.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := pgtmp.Start(ctx, pgtmp.WithLogicalReplication(0))
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "durable_test: no server (go test -short runs the server-free subset): %v\n", err)
		return 1
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()
	cluster, connString = c, c.ConnString()
	return leakcheck.After("durable_test")(m.Run())
}
