package pgnotify

import (
	"math/rand/v2"
	"time"
)

// This file holds the Manager's reconnect backoff, all of it: the delay
// before each attempt, where a new outage starts from, and the automatic
// reconnect loop that waits it out. (Package bus uses internal/backoff,
// where this one is to move.)

// backoff returns the delay before reconnect attempt n (from 0): drawn with
// full jitter between min and min·2ⁿ, capped at max.
func backoff(min, max time.Duration, n int) time.Duration {
	ceil := max
	if n < 62 && min<<n > 0 && min<<n < max {
		ceil = min << n
	}
	return min + rand.N(ceil-min+1)
}

// stableAfter is how long a recovered connection must stay up before the
// reconnect backoff starts again from min.
func (c *config) stableAfter() time.Duration {
	return max(c.reconnectMax, 10*time.Second)
}

// firstAttempt is the backoff step the recovery of the dead mb starts from:
// 0, unless mb was itself recovered only shortly before it died. Then it
// goes on from there: no storm against a server that accepts and then
// drops.
func (c *config) firstAttempt(mb *member, now time.Time) int {
	if !mb.adopted.IsZero() && now.Sub(mb.adopted) < c.stableAfter() {
		return mb.attempt + 1
	}
	return 0
}

// goReconnect starts the automatic recovery of a dead connection.
func (m *Manager) goReconnect(g Garbage, attempt int) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.reconnect(g, attempt)
	}()
}

// reconnect replaces g, waiting a backoff delay before each attempt, until
// it succeeds, the manager closes, or g leaves the garbage set (taken by
// TakeGarbage). g stays claimed in m.recovering throughout, so Next does not
// see an empty set between attempts. attempt is the backoff step to start
// from (see firstAttempt).
func (m *Manager) reconnect(g Garbage, attempt int) {
	delay := func() time.Duration { return backoff(m.cfg.reconnectMin, m.cfg.reconnectMax, attempt) }
	// try numbers the attempts of this outage for the log, from 1
	// whatever backoff step it starts from.
	for try := 1; ; try++ {
		if m.test.sleep(m.ctx, delay()) != nil {
			return
		}
		err := m.recoverOne(m.ctx, m.cfg.dial, g, attempt, try)
		if err == nil || m.ctx.Err() != nil || !m.stillGarbage(g.Conn) {
			return
		}
		attempt++
	}
}
