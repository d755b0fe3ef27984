package testkit_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/seed-c59d106d/pgnotify/internal/testkit"
)

// fatalTB records Fatalf instead of failing the test.
type fatalTB struct {
	testing.TB

	mu  sync.Mutex // guards msg
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.msg = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func TestWaitUntil(t *testing.T) {
	n := 0
	testkit.WaitUntil(t, time.Minute, "the third call", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}

	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		testkit.WaitUntil(f, time.Millisecond, "nothing", func() bool { return false })
	}()
	<-done
	if !strings.Contains(f.msg, "timed out waiting for nothing") {
		t.Errorf("WaitUntil that times out: %q, want it to name what it waited for", f.msg)
	}
}

func TestReceive(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	if got := testkit.Receive(t, ch, "seven"); got != 7 {
		t.Fatalf("Receive = %d, want 7", got)
	}
}

func TestContextEndsWithTest(t *testing.T) {
	var done <-chan struct{}
	t.Run("sub", func(t *testing.T) { done = testkit.Context(t, time.Hour).Done() })
	select {
	case <-done:
	default:
		t.Error("the context of a test that has ended is not done")
	}
}
