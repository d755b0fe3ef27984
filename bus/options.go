package bus

import (
	"log/slog"
	"time"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/backoff"
)

// Defaults of the Bus's own options.
const (
	defaultBuffer = 1024
	// maxBuffer bounds WithBuffer: far more than a reader can use, and the
	// ring's power-of-two arithmetic stays exact below it.
	maxBuffer = 1 << 30
	// defaultRoundTrip is the Manager's default health-check timeout, which
	// also bounds each of its round trips.
	defaultRoundTrip = 10 * time.Second
	// dialTimeout bounds one attempt to connect, so that a server that
	// accepts TCP and says nothing cannot hold it for ever.
	dialTimeout = 30 * time.Second
)

// An Option configures a [Bus]. Options are applied in order by [New];
// none is required.
type Option func(*config)

// config is fixed when New returns.
type config struct {
	reconnectMin, reconnectMax time.Duration
	manager                    []pgnotify.Option // health check, pending bound, logger
	healthTimeout              time.Duration
	logger                     *slog.Logger
}

func newConfig(opts []Option) config {
	c := config{
		reconnectMin:  backoff.DefaultMin,
		reconnectMax:  backoff.DefaultMax,
		healthTimeout: defaultRoundTrip,
	}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return c
}

// roundTrip bounds how long a Close waits for an UNLISTEN: the timeout the
// Manager gives one round trip.
func (c *config) roundTrip() time.Duration { return c.healthTimeout }

// WithReconnect sets the backoff between attempts to connect the Bus, the
// first time and after its connection died: each wait is drawn at random
// between min and an exponentially growing ceiling capped at max. The
// default is 100ms to 5s: against a server that refuses connections for
// 30s, about 17 attempts, and the connection back within max of its
// return. An outage ends, and the next one starts again from min, once a
// connection has stayed up at least as long as the wait before it: a Bus
// whose backend is killed every half second is deaf about min each time.
// min <= 0 keeps 100ms, max <= 0 keeps 5s, and max < min means min.
// Reconnection cannot be turned off: a Bus always replaces its connection.
func WithReconnect(min, max time.Duration) Option {
	return func(c *config) {
		c.reconnectMin, c.reconnectMax = backoff.Bounds(min, max)
	}
}

// WithHealthCheck sets the health check of the Bus's connection, as
// [pgnotify.WithHealthCheck] does for a Manager: the default pings after
// 30s of silence with a 10s timeout; every <= 0 turns it off. The timeout
// (or 10s when it is off) also bounds every LISTEN and UNLISTEN the Bus
// makes, and so how long [Subscription.Close] waits for its UNLISTEN.
func WithHealthCheck(every, timeout time.Duration) Option {
	return func(c *config) {
		c.manager = append(c.manager, pgnotify.WithHealthCheck(every, timeout))
		if timeout > 0 {
			c.healthTimeout = timeout
		}
	}
}

// WithMaxPending sets how many notifications the Bus's connection holds
// before its reader stops, as [pgnotify.WithMaxPending] does for a Manager
// (default 2048). It matters under [OverflowBlock]: while a subscription
// blocks the Bus, at most this many wait in the client, and the rest in
// the server's queue.
func WithMaxPending(n int) Option {
	return func(c *config) { c.manager = append(c.manager, pgnotify.WithMaxPending(n)) }
}

// WithLogger makes the Bus log deaths, recoveries and failed connection
// attempts to l. The default is no logging. Payloads are never logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) {
		c.logger = l
		c.manager = append(c.manager, pgnotify.WithLogger(l))
	}
}

// A SubscribeOption configures one [Subscription]; see [WithBuffer] and
// [WithOverflow].
type SubscribeOption func(*subscribeConfig)

type subscribeConfig struct {
	buffer   int
	overflow Overflow
}

func newSubscribeConfig(opts []SubscribeOption) subscribeConfig {
	c := subscribeConfig{buffer: defaultBuffer, overflow: OverflowDropOldest}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return c
}

// WithBuffer bounds how many notifications a subscription holds for its
// reader: 1024 by default; n <= 0 keeps the default, and n above 2³⁰
// (math.MaxInt, say) means 2³⁰. The buffer grows as it fills, so an idle
// subscription costs little whatever its bound. What happens when it is
// full is the subscription's [Overflow] policy.
func WithBuffer(n int) SubscribeOption {
	return func(c *subscribeConfig) {
		if n > 0 {
			c.buffer = min(n, maxBuffer)
		}
	}
}

// WithOverflow sets what a subscription does when its buffer is full:
// [OverflowDropOldest] (the default) or [OverflowBlock]. An unknown value
// keeps the default.
func WithOverflow(p Overflow) SubscribeOption {
	return func(c *subscribeConfig) {
		if p == OverflowDropOldest || p == OverflowBlock {
			c.overflow = p
		}
	}
}

// Overflow is a subscription's policy for a full buffer.
type Overflow uint8

const (
	// OverflowDropOldest drops the oldest notifications to make room for
	// the newest, then yields a [pgnotify.Lagged] event whose Dropped says
	// how many were lost. A reader that stalls never slows the Bus nor any
	// other subscription, and its memory stays within its bound.
	OverflowDropOldest Overflow = iota
	// OverflowBlock loses nothing: the Bus waits until the reader makes
	// room or the subscription is closed. Meanwhile every subscription of
	// the Bus waits too (each batch in hand still reaches every
	// OverflowDropOldest subscription first), the Bus's connection stops
	// reading, TCP pushes back, and the server keeps the rest in its
	// notification queue (8 GB shared by the whole cluster; once full,
	// every NOTIFY fails). Use it for a reader that must see everything
	// and keeps up.
	OverflowBlock
)
