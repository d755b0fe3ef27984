package pgnotify

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"
)

// Stats are counters a user would graph, from [Manager.Stats]. Counts are
// totals since [NewManager]; Members, Garbage, Recovering and Pending are
// the state now.
type Stats struct {
	Notifications uint64 // notifications yielded in Batch events
	Batches       uint64 // Batch events yielded
	IdleTicks     uint64 // Idle events yielded
	Deaths        uint64 // Dead events yielded
	// DeathsByCause splits Deaths by cause, the same whichever round trip
	// or read met it: the server's SQLSTATE when it sent an error (such as
	// "57P01" for pg_terminate_backend or an admin shutdown); "health" when
	// the server stopped answering, a round trip the manager made (health
	// ping, drain pass, Listen) getting no reply within the
	// health-check timeout; "network" for a socket error, EOF, or a
	// connection pgx found closed (pgconn.ErrConnClosed, as after a cut in
	// the middle of a query); "not_listening" for a session a health check
	// found deaf ([ErrNotListening]); "closed" for a connection a Do
	// function closed without an error of its own; else "other" (such as
	// the error a Do function returned when it closed the connection).
	DeathsByCause     map[string]uint64
	Recoveries        uint64 // Recovered events queued
	ReconnectAttempts uint64 // dials made by Recover and WithReconnect
	ReconnectFailures uint64 // of those, the ones that failed
	HealthChecks      uint64 // health checks of quiet members
	// QueueUsage is the fraction of the server's notification queue in
	// use (pg_notification_queue_usage(), 0 to 1), as the latest health
	// check read it: 0 until one has run, and with members on several
	// servers, the one last checked. NOTIFY fails once the queue is full;
	// it fills when a listening session does not read (a long
	// transaction, a stalled listener). A logger gets a warning at 0.5.
	QueueUsage   float64
	Members      int // live members
	Garbage      int // dead connections held
	Recovering   int // dead connections being replaced
	Pending      int // notifications received and not yet yielded
	PendingBytes int // their size, as WithMaxPendingBytes counts it
	// PendingPeak and PendingBytesPeak are the most one member has held at
	// once since NewManager. Above the bounds, they show what round trips
	// pulled in (see WithMaxPendingBytes).
	PendingPeak      int
	PendingBytesPeak int
}

// counters are updated without the manager's lock.
type counters struct {
	notifications, batches, idle   atomic.Uint64
	recoveries, attempts, failures atomic.Uint64
	pings                          atomic.Uint64
	queueUsage                     atomic.Uint64 // math.Float64bits of the latest sample
	queueHigh                      atomic.Bool   // a queue warning was logged and not re-armed
	peakPending, peakBytes         atomic.Int64
}

// raisePeak records a member's pending set of n notifications and size
// bytes if it is the largest seen. The loads are all a steady stream costs.
func (c *counters) raisePeak(n, size int) {
	raise(&c.peakPending, int64(n))
	raise(&c.peakBytes, int64(size))
}

func raise(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// Stats returns the manager's counters. It is safe from any goroutine.
func (m *Manager) Stats() Stats {
	s := Stats{
		Notifications:     m.stats.notifications.Load(),
		Batches:           m.stats.batches.Load(),
		IdleTicks:         m.stats.idle.Load(),
		Recoveries:        m.stats.recoveries.Load(),
		ReconnectAttempts: m.stats.attempts.Load(),
		ReconnectFailures: m.stats.failures.Load(),
		HealthChecks:      m.stats.pings.Load(),
		QueueUsage:        math.Float64frombits(m.stats.queueUsage.Load()),
		PendingPeak:       int(m.stats.peakPending.Load()),
		PendingBytesPeak:  int(m.stats.peakBytes.Load()),
		DeathsByCause:     map[string]uint64{},
	}
	m.mu.Lock()
	mbs := m.membersLocked(true)
	for cause, n := range m.deaths {
		s.DeathsByCause[cause] = n
		s.Deaths += n
	}
	s.Garbage = len(m.ms.garbage)
	s.Recovering = len(m.ms.recovering)
	m.mu.Unlock()
	for _, mb := range mbs {
		mb.mu.Lock()
		s.Pending += len(mb.pending)
		s.PendingBytes += mb.pendingBytes
		if mb.liveLocked() {
			s.Members++
		}
		mb.mu.Unlock()
	}
	return s
}

// causeClass names the kind of a cause of death, for Stats. A cause is
// classed by what happened, not by who was asking: a stall is "health"
// whether a health ping or a drain pass met it, and a cut is "network"
// whether it came as a socket error or as pgx's ErrConnClosed.
func causeClass(err error) string {
	var pgErr *pgconn.PgError
	var netErr net.Error
	switch {
	case errors.Is(err, ErrNotListening):
		return "not_listening"
	case errors.As(err, &pgErr):
		return pgErr.Code
	case errors.Is(err, errClosedInDo):
		return "closed"
	case pgconn.Timeout(err), errors.Is(err, context.DeadlineExceeded):
		return "health"
	case errors.As(err, &netErr), isEOF(err), errors.Is(err, pgconn.ErrConnClosed):
		return "network"
	case errors.Is(err, errHealth):
		return "health"
	}
	return "other"
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
