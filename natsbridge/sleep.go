package natsbridge

import (
	"context"
	"time"
)

// sleep waits d (a delay drawn by internal/backoff), or until ctx ends (it
// then returns ctx's error).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
