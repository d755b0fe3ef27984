package pgnotify

import (
	"log/slog"
	"time"
)

// Defaults of the Bus's own options.
const (
	defaultBusReconnectMin = 100 * time.Millisecond
	defaultBusReconnectMax = 15 * time.Second
	defaultBuffer          = 1024
	// busDialTimeout bounds one attempt of the Bus's first connection, so
	// that a server that accepts TCP and says nothing cannot hold it for ever.
	busDialTimeout = 30 * time.Second
)

// A BusOption configures a [Bus]. Options are applied in order by [NewBus];
// none is required.
type BusOption func(*busConfig)

// busConfig is fixed when NewBus returns.
type busConfig struct {
	reconnectMin, reconnectMax time.Duration
	manager                    []Option // health check, pending bound, logger
	healthTimeout              time.Duration
	logger                     *slog.Logger
}

func newBusConfig(opts []BusOption) busConfig {
	c := busConfig{
		reconnectMin:  defaultBusReconnectMin,
		reconnectMax:  defaultBusReconnectMax,
		healthTimeout: defaultHealthTimeout,
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
func (c *busConfig) roundTrip() time.Duration { return c.healthTimeout }

// WithBusReconnect sets the backoff between attempts to connect the Bus, the
// first time and after its connection died: each delay is drawn at random
// between min and an exponentially growing ceiling capped at max (see
// [WithReconnect]). The default is 100ms to 15s; min <= 0 keeps 100ms, and
// max < min means min. Reconnection cannot be turned off: a Bus always
// replaces its connection.
func WithBusReconnect(min, max time.Duration) BusOption {
	return func(c *busConfig) {
		if min <= 0 {
			min = defaultBusReconnectMin
		}
		if max < min {
			max = min
		}
		c.reconnectMin, c.reconnectMax = min, max
	}
}

// WithBusHealthCheck sets the health check of the Bus's connection, as
// [WithHealthCheck] does for a Manager: the default pings after 30s of
// silence with a 10s timeout; every <= 0 turns it off. The timeout (or 10s
// when it is off) also bounds every LISTEN and UNLISTEN the Bus makes, and
// so how long [Subscription.Close] waits for its UNLISTEN.
func WithBusHealthCheck(every, timeout time.Duration) BusOption {
	return func(c *busConfig) {
		c.manager = append(c.manager, WithHealthCheck(every, timeout))
		if timeout > 0 {
			c.healthTimeout = timeout
		}
	}
}

// WithBusMaxPending sets how many notifications the Bus's connection holds
// before its reader stops, as [WithMaxPending] does for a Manager (default
// 2048). It matters under [OverflowBlock]: while a subscription blocks the
// Bus, at most this many wait in the client, and the rest in the server's
// queue.
func WithBusMaxPending(n int) BusOption {
	return func(c *busConfig) { c.manager = append(c.manager, WithMaxPending(n)) }
}

// WithBusLogger makes the Bus log deaths, recoveries and failed connection
// attempts to l. The default is no logging. Payloads are never logged.
func WithBusLogger(l *slog.Logger) BusOption {
	return func(c *busConfig) {
		c.logger = l
		c.manager = append(c.manager, WithLogger(l))
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
// reader: 1024 by default; n <= 0 keeps the default. The buffer grows as it
// fills, so an idle subscription costs little whatever its bound. What
// happens when it is full is the subscription's [Overflow] policy.
func WithBuffer(n int) SubscribeOption {
	return func(c *subscribeConfig) {
		if n > 0 {
			c.buffer = n
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
	// the newest, then yields a [Lagged] event whose Dropped says how many
	// were lost. A reader that stalls never slows the Bus nor any other
	// subscription, and its memory stays within its bound.
	OverflowDropOldest Overflow = iota
	// OverflowBlock loses nothing: the Bus waits until the reader makes
	// room or the subscription is closed. Meanwhile every subscription of
	// the Bus waits too, the Bus's connection stops reading, TCP pushes
	// back, and the server keeps the rest in its notification queue (8 GB
	// shared by the whole cluster; once full, every NOTIFY fails). Use it
	// for a reader that must see everything and keeps up.
	OverflowBlock
)
