package bus

// Stats are a Bus's counters and state, from [Bus.Stats]. Counts are
// totals since [New]; the other fields are the state now.
type Stats struct {
	Connected     bool   // the connection is live and listens on the channels wanted (not while down, dead or being replaced)
	PID           uint32 // the backend process ID of the live connection (pg_stat_activity.pid), 0 when not Connected
	Subscriptions int    // live subscriptions (including those still subscribing)
	Channels      int    // channels the connection LISTENs on now
	Received      uint64 // notifications the connection received
	Delivered     uint64 // notifications handed to subscriptions (one per subscription)
	Dropped       uint64 // of those, dropped by OverflowDropOldest (reported by Lagged)
	Deaths        uint64 // times the connection died
	Reconnects    uint64 // times a new connection replaced a dead one
}

// Stats returns the Bus's counters and state. It is safe from any
// goroutine and waits for no round trip.
func (b *Bus) Stats() Stats {
	s := Stats{
		Received:   b.received.Load(),
		Delivered:  b.delivered.Load(),
		Dropped:    b.dropped.Load(),
		Deaths:     b.deaths.Load(),
		Reconnects: b.recoveries.Load(),
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s.Subscriptions = len(b.subs)
	if b.state == stateLive && !b.closed {
		s.Connected, s.PID = true, b.pid
		for _, e := range b.chans {
			if e.listened {
				s.Channels++
			}
		}
	}
	return s
}
