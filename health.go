package pgnotify

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// healthSQL is a health check: one round trip, as a ping, that also reads
// the server's notification queue usage and the channels the session
// listens on. The two statements run as one implicit transaction.
const healthSQL = "SELECT pg_notification_queue_usage(); SELECT pg_listening_channels()"

// Queue usage at which a logger gets a warning, and below which the warning
// is re-armed: the gap keeps a queue hovering at the threshold from warning
// at every sample.
const (
	queueWarnAt = 0.5
	queueRearm  = 0.45
)

// healthCheck is a quiet member's health check: a round trip on a fresh
// context with its own timeout that also confirms that the session still
// listens on every channel the manager tracks for it, and samples the
// server's queue. It reports whether the member is still live. As with
// roundTrip, the notifications the server sent ahead of its reply are
// published before a death is.
func (mb *member) healthCheck() bool {
	mb.mu.Lock()
	tracked := mb.channels // replaced, never changed, by channelCommand
	mb.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), mb.cfg.roundTripTimeout())
	defer cancel()
	usage, found, err := mb.checkQuery(ctx, tracked)
	if err == nil && found < len(tracked) {
		err = mb.notListening(ctx, tracked)
	}
	mb.publishBuffered()
	if err == nil && !mb.conn.IsClosed() {
		mb.own.sampleQueue(usage, func() []any { return connAttrs(mb.conn, "pid") })
		return true
	}
	if err == nil {
		err = errClosedInHealthCheck
	}
	if !errors.Is(err, ErrNotListening) {
		err = fmt.Errorf("%w: %w", errHealth, err)
	}
	mb.closeConn()
	mb.exit(err, nil)
	return false
}

// checkQuery runs healthSQL and returns the queue usage and how many of
// tracked the session listens on, reading the rows in place: a quiet
// member's check allocates next to nothing.
func (mb *member) checkQuery(ctx context.Context, tracked map[string]struct{}) (usage float64, found int, err error) {
	mrr := mb.conn.PgConn().Exec(ctx, healthSQL)
	for stmt := 0; mrr.NextResult(); stmt++ {
		rr := mrr.ResultReader()
		for rr.NextRow() {
			v := rr.Values()
			if len(v) != 1 {
				continue
			}
			if stmt == 0 {
				usage, _ = strconv.ParseFloat(string(v[0]), 64)
			} else if _, ok := tracked[string(v[0])]; ok {
				found++
			}
		}
		if _, err := rr.Close(); err != nil {
			mrr.Close()
			return 0, 0, err
		}
	}
	if err := mrr.Close(); err != nil {
		return 0, 0, err
	}
	return usage, found, nil
}

// notListening names the tracked channels the session lost, with one more
// round trip (the path of a death, not of every check).
func (mb *member) notListening(ctx context.Context, tracked map[string]struct{}) error {
	have, err := ListeningChannels(ctx, mb.conn)
	if err != nil {
		return err
	}
	var missing []string
	for c := range tracked {
		if _, found := slices.BinarySearch(have, c); !found {
			missing = append(missing, c)
		}
	}
	slices.Sort(missing)
	return &notListeningError{missing: missing, of: len(tracked)}
}

// sampleQueue records a health check's reading of the server's
// notification queue, and warns a logger when it reaches queueWarnAt: once
// per rise, again only after it fell below queueRearm. who names the
// connection that read it, for the log.
func (m *Manager) sampleQueue(usage float64, who func() []any) {
	m.stats.queueUsage.Store(math.Float64bits(usage))
	switch {
	case usage >= queueWarnAt:
		if m.stats.queueHigh.CompareAndSwap(false, true) {
			if l := m.cfg.logger; l != nil {
				l.Warn("pgnotify: the server's notification queue is filling: NOTIFY fails once it is full; "+
					"find the listening sessions that hold it back (a long transaction, a stalled listener)",
					append(who(), "usage", usage)...)
			}
		}
	case usage < queueRearm:
		m.stats.queueHigh.Store(false)
	}
}
