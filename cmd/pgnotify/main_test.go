package main_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/seed-c59d106d/pgnotify/internal/leakcheck"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// These tests run pgnotify as a user would: TestMain builds the binary, and
// each test executes it against a throwaway server.
var (
	// binary is the pgnotify built for the tests. Set by TestMain; read-only after.
	binary string
	// connString is the test server: DATABASE_URL or
	// PGNOTIFY_TEST_DATABASE_URL, or a cluster TestMain started. Empty
	// under -short. Set by TestMain; read-only after.
	connString string
)

// TestMain builds pgnotify (with -race when the tests run with it) and
// provides the server; usage tests need no server and run under -short too.
// After the tests it fails the run if a goroutine is left behind.
func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "pgnotify-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "cmd/pgnotify tests:", err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		binary = filepath.Join(dir, "pgnotify")
		args := []string{"build", "-o", binary}
		if raceEnabled {
			args = append(args, "-race")
		}
		if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "cmd/pgnotify tests: go build: %v\n%s", err, out)
			return 1
		}
		if testing.Short() {
			return m.Run()
		}
		return pgtmp.Main(m, "cmd/pgnotify tests", func(url string) { connString = url }, leakcheck.After("cmd/pgnotify tests"))
	}()
	os.Exit(code)
}
