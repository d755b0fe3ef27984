package pgnotify

import (
	"context"
	"errors"
	"io"
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
	// DeathsByCause splits Deaths by cause: the server's SQLSTATE (such as
	// "57P01" for pg_terminate_backend), "health" for a failed or slow
	// ping, "network" for a socket error or EOF, "closed" for a connection
	// closed inside Do, or "other".
	DeathsByCause     map[string]uint64
	Recoveries        uint64 // Recovered events queued
	ReconnectAttempts uint64 // dials made by Recover and WithReconnect
	ReconnectFailures uint64 // of those, the ones that failed
	HealthChecks      uint64 // pings of quiet members
	Members           int    // live members
	Garbage           int    // dead connections held
	Recovering        int    // dead connections being replaced
	Pending           int    // notifications received and not yet yielded
}

// counters are updated without the manager's lock.
type counters struct {
	notifications, batches, idle   atomic.Uint64
	recoveries, attempts, failures atomic.Uint64
	pings                          atomic.Uint64
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
		DeathsByCause:     map[string]uint64{},
	}
	m.mu.Lock()
	ws := make([]*member, 0, len(m.members))
	for _, w := range m.members {
		ws = append(ws, w)
	}
	for cause, n := range m.deaths {
		s.DeathsByCause[cause] = n
		s.Deaths += n
	}
	s.Garbage = len(m.garbage)
	s.Recovering = len(m.recovering)
	m.mu.Unlock()
	for _, w := range ws {
		w.mu.Lock()
		s.Pending += len(w.pending)
		if w.state == stateLive && !w.stop {
			s.Members++
		}
		w.mu.Unlock()
	}
	return s
}

// errHealth marks a death found by a health ping.
var errHealth = errors.New("pgnotify: health check failed")

// causeClass names the kind of a cause of death, for Stats.
func causeClass(err error) string {
	var pgErr *pgconn.PgError
	var netErr net.Error
	switch {
	case errors.As(err, &pgErr):
		return pgErr.Code
	case errors.Is(err, errHealth):
		return "health"
	case errors.Is(err, errClosedInDo):
		return "closed"
	case errors.As(err, &netErr), errors.Is(err, context.DeadlineExceeded), isEOF(err):
		return "network"
	}
	return "other"
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
