// Package leakcheck fails a test binary that leaves goroutines running. It
// is imported by test files only, so goleak stays out of everything else.
package leakcheck

import (
	"fmt"
	"os"
	"time"

	"go.uber.org/goleak"
)

// grace is how long goroutines on their way out get. Each goleak.Find
// retries for about half a second; a goroutine that ends after a network
// round trip, or a pipe reader that ends once its process has exited, can
// take longer on a loaded machine under -race.
const grace = 5 * time.Second

// Find returns the goroutines still running after the grace period, or nil.
// Nothing is ignored: the tests close what they open.
func Find() error { return findWithin(grace) }

func findWithin(d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := goleak.Find()
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

// After returns a test run's exit code, turned into a failure when
// goroutines are left, which it prints naming who: the after function of
// pgtmp.Main, or called by a TestMain itself.
func After(who string) func(code int) int {
	return func(code int) int {
		if err := Find(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: goroutines still running after the tests:\n%v\n", who, err)
			return max(code, 1)
		}
		return code
	}
}
