package pgtest_test

import (
	"flag"
	"os"
	"testing"

	"github.com/seed-c59d106d/pgnotify/internal/leakcheck"
)

// TestMain runs the tests and examples, each of which starts its own server,
// and fails the run if any goroutine is left behind. Under -short, the
// server-free subset, examples are left out (they cannot skip) unless a -run
// pattern asks for them, and tests skip.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		if f := flag.Lookup("test.run"); f != nil && f.Value.String() == "" {
			_ = flag.Set("test.run", "^Test")
		}
		os.Exit(m.Run())
	}
	os.Exit(leakcheck.After("pgtest")(m.Run()))
}
