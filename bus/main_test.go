package bus_test

import (
	"flag"
	"os"
	"testing"

	"github.com/seed-c59d106d/pgnotify/internal/leakcheck"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// connString is the server the tests and examples here use:
// PGNOTIFY_TEST_DATABASE_URL, else DATABASE_URL, else a cluster TestMain
// started (pgtmp.FromEnv). It is empty under -short. Set by TestMain
// before any test runs; read-only after.
var connString string

// exampleURL is connString under the name the examples read.
var exampleURL string

// TestMain provides the server and, after the tests, fails the run if any
// goroutine is left behind. Missing server binaries fail the run. Under
// -short, the server-free subset, it runs only the tests: examples always
// run and need a server, so they are left out unless a -run pattern asks
// for them.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		if f := flag.Lookup("test.run"); f != nil && f.Value.String() == "" {
			flag.Set("test.run", "^Test")
		}
		os.Exit(m.Run())
	}
	os.Exit(pgtmp.Main(m, "bus", func(url string) { connString, exampleURL = url, url }, leakcheck.After("bus")))
}
