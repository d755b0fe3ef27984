package pgnotify

import (
	"log/slog"
	"time"

	"github.com/seed-c59d106d/pgnotify/internal/backoff"
)

// Defaults for the options. They are documented on each option.
const (
	defaultHealthEvery   = 30 * time.Second
	defaultHealthTimeout = 10 * time.Second
	defaultMaxPending    = 2048
	// defaultMaxPendingBytes is a few MiB: 2048 notifications of a few
	// hundred bytes, or about 500 of the largest payloads.
	defaultMaxPendingBytes = 4 << 20
	// roundTripTimeout bounds a round trip the manager makes on the
	// application's behalf (Add's channel query, a drain pass, Listen) when
	// health checks are off and so give no timeout of their own.
	roundTripTimeout = 30 * time.Second
	// drainConcurrency bounds the round trips of one drain pass in flight.
	drainConcurrency = 64
)

// An Option configures a [Manager]. Options are applied in order by
// [NewManager]; none is required.
type Option func(*config)

// config is fixed when NewManager returns; nothing writes it afterwards.
type config struct {
	timeout       time.Duration
	dial          DialFunc
	reconnectMin  time.Duration
	reconnectMax  time.Duration
	healthEvery   time.Duration
	healthTimeout time.Duration
	maxPending    int
	maxBytes      int
	logger        *slog.Logger
}

func newConfig(opts []Option) config {
	c := config{
		timeout:       NoTimeout,
		healthEvery:   defaultHealthEvery,
		healthTimeout: defaultHealthTimeout,
		maxPending:    defaultMaxPending,
		maxBytes:      defaultMaxPendingBytes,
	}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return c
}

// roundTripTimeout is how long a round trip made for the application may
// take before the connection is given up as dead.
func (c *config) roundTripTimeout() time.Duration {
	if c.healthTimeout > 0 {
		return c.healthTimeout
	}
	return roundTripTimeout
}

// WithTimeout sets the initial timeout of [Manager.Next]; see
// [Manager.SetTimeout] for its meaning. The default is [NoTimeout].
func WithTimeout(d time.Duration) Option {
	return func(c *config) { c.timeout = normTimeout(d) }
}

// WithReconnect makes the manager recover dead connections by itself, as
// [Manager.Recover] does, from the moment their Dead event is yielded:
// each is redialled after a delay drawn at random between min and an
// exponentially growing ceiling capped at max, until it succeeds or the
// manager is closed. An outage ends, and the next one starts again from
// min, only once a replacement has stayed healthy at least as long as the
// wait before it: a connection killed every half second is replaced after
// min each time, while a server that refuses connections, or accepts and
// then drops them, gets at most one attempt per wait, the wait growing to
// max (with the defaults, about 17 attempts in 30s). A connection
// being recovered counts as a member, so Next does not return io.EOF.
// Failed attempts are logged (see [WithLogger]) and counted in
// [Manager.Stats]. A nil dial turns automatic recovery off, the default.
// min <= 0 means 100ms and max <= 0 means 5s (the Bus's and durable's
// defaults too); a max below min means min.
func WithReconnect(dial DialFunc, min, max time.Duration) Option {
	return func(c *config) {
		c.dial = dial
		c.reconnectMin, c.reconnectMax = backoff.Bounds(min, max)
	}
}

// WithHealthCheck checks a member that has received nothing for every (at
// least every, at most twice every), so that a half-open TCP connection, which
// a reader alone would wait on forever, is found. The check is one round
// trip that also confirms the session still listens on its tracked channels
// (else it dies with [ErrNotListening]) and samples the server's
// notification queue ([Stats].QueueUsage). A check that fails or takes
// longer than timeout means the connection is dead. The default is every
// 30s with a 10s timeout; every <= 0 turns health checks off. A timeout <= 0
// keeps the default timeout. The timeout also bounds the round trips of a
// drain pass and of [Manager.Listen].
func WithHealthCheck(every, timeout time.Duration) Option {
	return func(c *config) {
		c.healthEvery = every
		if timeout > 0 {
			c.healthTimeout = timeout
		}
	}
}

// WithMaxPending bounds the notifications each member holds for the
// consumer, and so the size of a [Batch]. When a member's buffer is full its
// waiter stops reading until [Manager.Next] takes the batch: the server keeps
// the rest in its notification queue, and nothing is dropped. The default is
// 2048; n <= 0 keeps the default.
//
// A consumer that stalls holds back the server's notification queue (8 GB,
// shared by the whole cluster; see pg_notification_queue_usage()): once it
// fills, every NOTIFY in the cluster fails.
func WithMaxPending(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxPending = n
		}
	}
}

// WithMaxPendingBytes bounds the bytes of notifications (channel and
// payload, plus a fixed 48 per notification for its header) each member
// holds for the consumer, as [WithMaxPending] bounds their number: the
// waiter stops reading once either bound is reached, and a [Batch] holds at
// most n bytes (or one notification, if a single one is larger). The
// default is 4 MiB per member; n <= 0 keeps the default.
//
// Both bounds hold for what the waiter reads. A round trip the manager
// makes — a drain pass, [Manager.Do], [Manager.Listen], a health ping —
// reads up to the server's ReadyForQuery, so it takes in every notification
// the server had queued for that session, whatever the bounds: for a
// member whose consumer has fallen behind, that is its whole backlog in the
// server's queue. The waiter then reads nothing more until the consumer has
// taken the member below both bounds. [Stats] reports the largest pending
// set seen (PendingPeak, PendingBytesPeak).
func WithMaxPendingBytes(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxBytes = n
		}
	}
}

// WithLogger makes the manager log deaths, recoveries and failed reconnect
// attempts to l. The default is no logging. Payloads are never logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// normTimeout maps every negative duration to NoTimeout.
func normTimeout(d time.Duration) time.Duration {
	if d < 0 {
		return NoTimeout
	}
	return d
}
