package main_test

import (
	"context"
	"testing"
	"time"

	"github.com/seed-c59d106d/pgnotify/internal/testkit"
)

// requireServer and testContext are internal/testkit's, shared with test/'s
// and durable's tests.

// testTimeout bounds each test. Generous: the machine is shared and the
// binary runs under -race.
const testTimeout = 90 * time.Second

// requireServer skips t under -short, which runs only the tests that need no
// server. Without -short TestMain has provided one (or failed the run).
func requireServer(t testing.TB) { t.Helper(); testkit.RequireServer(t) }

// testContext returns a context that ends after testTimeout or when t
// ends.
func testContext(t testing.TB) context.Context { t.Helper(); return testkit.Context(t, testTimeout) }
