package natsbridge

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is a jittered exponential wait between retries.
type backoff struct{ n int }

// sleep waits a random time between lo and a ceiling that doubles with each
// call up to hi, or until ctx ends (it then returns ctx's error).
func (b *backoff) sleep(ctx context.Context, lo, hi time.Duration) error {
	ceil := lo << min(b.n, 20)
	if ceil > hi || ceil <= 0 {
		ceil = hi
	}
	b.n++
	d := lo + rand.N(ceil-lo+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
