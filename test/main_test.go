// Package pgnotifytest holds pgnotify's integration and fault tests, which run
// against a real PostgreSQL server that TestMain provides.
package pgnotifytest

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// connString is the server every test here uses: PGNOTIFY_TEST_DATABASE_URL,
// else DATABASE_URL, else a cluster TestMain started (pgtmp.FromEnv). It is empty under -short. Set by TestMain
// before any test runs; read-only after.
var connString string

// TestMain provides the server and, after the tests, fails the run if any
// goroutine is left behind. Missing server binaries fail the run: without a
// server these tests would prove nothing.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}

	os.Exit(pgtmp.Main(m, "pgnotifytest", func(url string) { connString = url }, func(code int) int {
		if leaks := findLeaks(); leaks != nil {
			fmt.Fprintf(os.Stderr, "pgnotifytest: goroutines still running after the tests:\n%v\n", leaks)
			return max(code, 1)
		}
		return code
	}))
}

// findLeaks returns the goroutines that are still running once the tests
// are over, after giving goroutines that are on their way out a few seconds
// to finish. Nothing is ignored: every test closes what it opens, and
// connect waits for pgconn's cleanup goroutine, so any goroutine left is a
// leak. The cluster is still up here (stop runs after), so a leak that hangs
// on the server shows as itself, not as a connection error.
func findLeaks() error {
	// Each Find retries for about half a second; keep asking for longer,
	// since a goroutine ending after a network round trip can take that long
	// on a loaded machine under -race.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := goleak.Find()
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}
