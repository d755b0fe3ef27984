package otel_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// connString is the test server's, set by TestMain.
var connString string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	url, stop, err := pgtmp.FromEnv(context.Background(), pgtmp.WithLogicalReplication(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "otel tests:", err)
		return 1
	}
	defer stop()
	connString = url
	return m.Run()
}
