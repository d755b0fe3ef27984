package pgtest_test

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
)

// runTest runs test as go test would run a TestX(t *testing.T): with a t
// whose Fatal ends the test's goroutine, and whose cleanups run, last first,
// when the test returns. An Example has no *testing.T of its own; in a real
// test, pass the t that go test gives you to pgtest directly.
func runTest(test func(t testing.TB)) {
	t := &exampleTB{}
	inGoroutine := func(f func()) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			f()
		}()
		<-done
	}
	inGoroutine(func() { test(t) })
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		inGoroutine(t.cleanups[i])
	}
}

// exampleTB is the testing.TB of runTest. The embedded testing.TB is nil:
// only the methods below may be called, which is all pgtest and the examples
// call. A failure is printed, so that the example's output shows it.
type exampleTB struct {
	testing.TB

	mu       sync.Mutex // guards cleanups
	cleanups []func()
}

func (t *exampleTB) Helper() {}

func (t *exampleTB) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}

func (t *exampleTB) Errorf(format string, args ...any) { fmt.Printf("FAIL: "+format+"\n", args...) }

func (t *exampleTB) Error(args ...any) { fmt.Println(append([]any{"FAIL:"}, args...)...) }

func (t *exampleTB) Fatalf(format string, args ...any) {
	t.Errorf(format, args...)
	runtime.Goexit()
}

func (t *exampleTB) Fatal(args ...any) {
	t.Error(args...)
	runtime.Goexit()
}
