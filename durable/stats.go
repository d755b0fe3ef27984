package durable

// Stats is what a stream has done since [Open], for graphs and alerts.
type Stats struct {
	// Batches counts the transactions read from the server for Next (one
	// per Batch event; a batch the server sends again after a reconnect is
	// not counted twice).
	Batches uint64
	// Messages counts the messages in those batches.
	Messages uint64
	// AckedLSN is the position acknowledged on the slot: the server may
	// forget everything before it. It reaches the server within about 20 ms.
	AckedLSN uint64
	// LagBytes is how far AckedLSN is behind the end of the server's WAL, as
	// of the server's last message (0 before it has sent one): the WAL the
	// consumer has yet to handle or acknowledge, other traffic included.
	LagBytes int64
	// Reconnects counts the connections lost and replaced (Recovered events).
	Reconnects uint64
}

// Stats returns the stream's counters and positions. It is safe from any
// goroutine, also after Close.
func (s *Stream) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Batches:    s.batches,
		Messages:   s.messages,
		AckedLSN:   uint64(s.acked),
		Reconnects: s.reconnects,
	}
	if end := s.walEnd.Load(); end > uint64(s.acked) {
		st.LagBytes = int64(end - uint64(s.acked))
	}
	return st
}

// Slot returns the name of the replication slot the stream reads: with a
// batch's LSN it identifies the batch across restarts (for message IDs that
// let a downstream system drop what comes again).
func (s *Stream) Slot() string { return s.slot }

// ManualAck reports whether the stream was opened [WithManualAck]: whether
// its consumer must acknowledge each batch with [Stream.Ack].
func (s *Stream) ManualAck() bool { return s.cfg.manualAck }
