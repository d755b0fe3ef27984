package pgnotify_test

import (
	"flag"
	"os"
	"testing"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// exampleURL is the server the runnable examples use: PGNOTIFY_TEST_DATABASE_URL,
// else DATABASE_URL, else a throwaway cluster (pgtmp.FromEnv). Set by TestMain; read-only after.
var exampleURL string

// TestMain provides the examples' server. Under -short, the server-free
// subset, it runs only the tests: examples always run and need a server, so
// they are left out unless a -run pattern asks for them.
func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		if f := flag.Lookup("test.run"); f != nil && f.Value.String() == "" {
			flag.Set("test.run", "^Test")
		}
		os.Exit(m.Run())
	}
	os.Exit(pgtmp.Main(m, "pgnotify examples", func(url string) { exampleURL = url; pgnotify.SetTestServer(url) }, nil))
}
