package durable

import (
	"log/slog"
	"time"

	"github.com/seed-c59d106d/pgnotify/internal/backoff"
)

// Option configures [Open].
type Option func(*config)

type config struct {
	statusInterval time.Duration
	backoffMin     time.Duration
	backoffMax     time.Duration
	logger         *slog.Logger // nil: no logging
	manualAck      bool

	// Limits on what the stream reads ahead of the consumer. Tests lower
	// them; a batch that alone exceeds maxPendingBytes is still read.
	maxPendingItems int
	maxPendingBytes int
}

func defaultConfig() config {
	return config{
		statusInterval:  10 * time.Second,
		backoffMin:      backoff.DefaultMin,
		backoffMax:      backoff.DefaultMax,
		maxPendingItems: 4096,
		maxPendingBytes: 16 << 20,
	}
}

// WithStatusInterval sets how often the stream sends the server a standby
// status update when nothing else makes it send one: a sign of life, which
// also carries the position of skipped transactions. Acknowledgements do not
// wait for it: they reach the server within about 20 ms. The default is 10
// seconds; it is shortened to a third of the server's wal_sender_timeout when
// that is shorter, so the server never drops a slow consumer. d <= 0 keeps the
// default.
func WithStatusInterval(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.statusInterval = d
		}
	}
}

// WithReconnect sets the backoff between reconnection attempts after the
// stream's connection is lost, pgnotify's one backoff (the Manager's and
// the Bus's): each wait is drawn at random between lo and a ceiling that
// doubles per failed attempt up to hi. An outage ends, and the next one
// starts again from lo, once a connection has stayed up at least as long
// as the wait before it: a walsender killed every half second costs about
// lo each time, while a server that refuses connections gets at most one
// attempt per wait. The default is 100 ms to 5 s. lo <= 0 keeps 100 ms,
// hi <= 0 keeps 5 s, and hi is raised to lo if lower. The stream always
// reconnects; it ends only on Close or on a permanent error (see [Open]).
func WithReconnect(lo, hi time.Duration) Option {
	return func(c *config) {
		c.backoffMin, c.backoffMax = backoff.Bounds(lo, hi)
	}
}

// WithLogger makes the stream log its connection losses, reconnection
// attempts and their failures. By default it logs nothing. Payloads are never
// logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// WithManualAck makes the consumer acknowledge each batch itself, with
// [Stream.Ack], instead of Next acknowledging the batch it returned last: for
// consumers that hand batches to several goroutines and finish them in any
// order. The slot then advances only past batches that are all acknowledged,
// and Close acknowledges nothing more. By default Next acknowledges.
func WithManualAck() Option {
	return func(c *config) { c.manualAck = true }
}
