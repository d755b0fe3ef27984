package pgtest_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify/internal/testkit"
)

func requireServer(t testing.TB) { testkit.RequireServer(t) }

func testContext(t testing.TB) context.Context { return testkit.Context(t, 2*time.Minute) }

func connect(t testing.TB, url string) *pgx.Conn { return testkit.Connect(t, url, nil) }

// failure runs f with a t that records a failure instead of failing the
// test, and returns the failure message, or "" if f did not fail. Cleanups
// go to the real t.
func failure(t *testing.T, f func(t testing.TB)) string {
	t.Helper()
	rec := &recordTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(rec)
	}()
	<-done
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.msg
}

// recordTB is failure's testing.TB: Fatalf and Errorf record, the rest is
// the real test's.
type recordTB struct {
	testing.TB

	mu  sync.Mutex // guards msg
	msg string
}

func (r *recordTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msg += fmt.Sprintf(format, args...)
}

func (r *recordTB) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

// setting returns the server's value of name.
func setting(t testing.TB, url, name string) string {
	t.Helper()
	var v string
	if err := connect(t, url).QueryRow(testContext(t), "SELECT current_setting($1)", name).Scan(&v); err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return v
}
