package pgnotify

import "github.com/seed-c59d106d/pgnotify/internal/backoff"

// This file holds the Manager's use of the reconnect backoff: each outage
// of a connection has one internal/backoff.Backoff (pgnotify's one
// backoff, with its reset rule), which the replacement carries on, so that
// the recovery of a replacement that dies again continues the outage or
// starts a new one as that rule says; and the automatic reconnect loop
// that waits it out.

// newBackoff returns a reconnect backoff with the Manager's bounds.
func (m *Manager) newBackoff() *backoff.Backoff {
	b := backoff.New(m.cfg.reconnectMin, m.cfg.reconnectMax)
	if m.test.clock != nil {
		b.SetClock(m.test.clock)
	}
	return b
}

// goReconnect starts the automatic recovery of a dead connection, with the
// backoff of its outage.
func (m *Manager) goReconnect(g Garbage, bo *backoff.Backoff) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.reconnect(g, bo)
	}()
}

// reconnect replaces g, waiting a backoff delay before each attempt, until
// it succeeds, the manager closes, or g leaves the garbage set (taken by
// TakeGarbage). g stays claimed in m.recovering throughout, so Next does not
// see an empty set between attempts. The replacement carries bo on.
func (m *Manager) reconnect(g Garbage, bo *backoff.Backoff) {
	// try numbers the attempts of this outage for the log, from 1
	// whatever backoff step it starts from.
	for try := 1; ; try++ {
		if m.test.sleep(m.ctx, bo.Next()) != nil {
			return
		}
		err := m.recoverOne(m.ctx, m.cfg.dial, g, bo, try)
		if err == nil || m.ctx.Err() != nil || !m.stillGarbage(g.Conn) {
			return
		}
	}
}
