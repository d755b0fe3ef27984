package bus

// Stats are a Bus's counters and state, from [Bus.Stats]. Counts are
// totals since [New]; the other fields are the state now.
type Stats struct {
	Connected     bool   // the connection is live and listens on the channels wanted (not while down, dead or being replaced)
	PID           uint32 // the backend process ID of the live connection (pg_stat_activity.pid; behind a pooler, the pooler's key), 0 when not Connected
	Subscriptions int    // live subscriptions (including those still subscribing)
	Channels      int    // channels the connection LISTENs on now
	Received      uint64 // notifications the connection received
	Delivered     uint64 // notifications handed to subscriptions (one per subscription)
	Dropped       uint64 // of those, dropped by OverflowDropOldest (reported by Lagged)
	Deaths        uint64 // times the connection died
	Reconnects    uint64 // times a new connection replaced a dead one
	// QueueUsage is the fraction of the server's notification queue in
	// use (pg_notification_queue_usage(), 0 to 1), as the latest health
	// check of the Bus's connection read it ([pgnotify.Stats].QueueUsage of
	// its Manager): 0 until one has run, and kept while the Bus is down.
	// The health check runs on a connection quiet for its interval
	// ([WithHealthCheck]), so a Bus that receives without pause samples it
	// seldom. NOTIFY fails once the queue is full; it fills when any
	// listening session of the cluster does not read (a long transaction,
	// a stalled listener, a subscription under OverflowBlock that stalls
	// this Bus). A logger ([WithLogger]) gets a warning at 0.5, once per
	// rise.
	QueueUsage float64
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
		QueueUsage: b.m.Stats().QueueUsage,
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
