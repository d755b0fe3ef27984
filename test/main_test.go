// Package pgnotifytest holds pgnotify's integration and fault tests, which run
// against a real PostgreSQL server that TestMain provides.
package pgnotifytest

import (
	"flag"
	"os"
	"testing"

	"github.com/seed-c59d106d/pgnotify/internal/leakcheck"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// connString is the server every test here uses: PGNOTIFY_TEST_DATABASE_URL,
// else DATABASE_URL, else a cluster TestMain started (pgtmp.FromEnv). It is empty under -short. Set by TestMain
// before any test runs; read-only after.
var connString string

// TestMain provides the server and, after the tests, fails the run if any
// goroutine is left behind (every test closes what it opens, and connect
// waits for pgconn's cleanup goroutine). Missing server binaries fail the run: without a
// server these tests would prove nothing.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}

	// The cluster is still up when the leak check runs (it stops after),
	// so a leak that hangs on the server shows as itself.
	os.Exit(pgtmp.Main(m, "pgnotifytest", func(url string) { connString = url }, leakcheck.After("pgnotifytest")))
}
