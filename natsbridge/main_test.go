package natsbridge_test

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

// connString is the PostgreSQL server every test uses, started by TestMain
// with wal_level = logical; unset under -short. Read-only once tests run.
var connString string

// TestMain starts a throwaway cluster ready for logical replication (these
// tests need it, so they start their own even when
// PGNOTIFY_TEST_DATABASE_URL is set) and, after the tests, fails the run if
// a goroutine is left. A binary started with childEnv set is a bridge
// process for the crash tests, not a test run.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := pgtmp.Start(ctx, pgtmp.WithLogicalReplication(0))
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "natsbridge_test: no server (go test -short runs the server-free subset): %v\n", err)
		os.Exit(1)
	}
	connString = c.ConnString()
	code := leakcheck.After("natsbridge_test")(m.Run())
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(code)
}
