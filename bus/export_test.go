package bus

// Test seams for the external tests, compiled into tests only.

// SetTestBeforeApply makes f run on the sync goroutine just before each
// LISTEN or UNLISTEN goes out. Call it before the first Subscribe.
func SetTestBeforeApply(b *Bus, f func(listen bool, channels []string)) { b.testBeforeApply = f }

// ChannelState reports what the index says of ch: how many subscriptions
// want it, whether the connection listens on it, and whether a LISTEN or
// UNLISTEN of it is on the wire.
func ChannelState(b *Bus, ch string) (subs int, listened, inflight bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.chans[ch]
	if e == nil {
		return 0, false, false
	}
	return len(e.subs), e.listened, e.inflight
}
