package pgnotify

import "time"

// idleTimer times the wait for an Idle event. It is owned by the consumer
// goroutine (the one calling Next) and reused across calls, so an idle wait
// costs no allocation after the first.
type idleTimer struct {
	t *time.Timer
}

// start arms the timer to fire after d and returns its channel.
func (it *idleTimer) start(d time.Duration) <-chan time.Time {
	if it.t == nil {
		it.t = time.NewTimer(d)
	} else {
		// Since Go 1.23 Reset discards a stale tick, so no draining is needed.
		it.t.Reset(d)
	}
	return it.t.C
}

// stop disarms the timer; it is safe to call when it was never started.
func (it *idleTimer) stop() {
	if it.t != nil {
		it.t.Stop()
	}
}
