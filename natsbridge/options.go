package natsbridge

import (
	"log/slog"
	"time"

	"github.com/seed-c59d106d/pgnotify"
)

// An Option changes how [Notify] or [Durable] publishes.
type Option func(*config)

type config struct {
	prefix     string
	db         string
	onEvent    func(pgnotify.Event)
	ackTimeout time.Duration
	retryMin   time.Duration
	retryMax   time.Duration
	logger     *slog.Logger
}

// DefaultPrefix is the first token of every subject unless [WithPrefix]
// sets another.
const DefaultPrefix = "pgnotify"

func newConfig(opts []Option) (config, error) {
	c := config{
		prefix:     DefaultPrefix,
		ackTimeout: 10 * time.Second,
		retryMin:   100 * time.Millisecond,
		retryMax:   5 * time.Second,
	}
	for _, o := range opts {
		o(&c)
	}
	return c, checkPrefix(c.prefix)
}

// WithPrefix sets the subjects' prefix: a channel's messages go to
// prefix + "." + channel, events to prefix + "._events". The default is
// [DefaultPrefix]. The prefix may hold several tokens ("app.pg") but no
// wildcard, whitespace or empty token.
func WithPrefix(prefix string) Option {
	return func(c *config) { c.prefix = prefix }
}

// WithDB sets the Pgnotify-Db header and the events' "db" field. By
// default [Notify] uses each connection's host:port/dbname, as the
// pgnotify command's "db" does, and [Durable] sets no Pgnotify-Db header.
func WithDB(label string) Option {
	return func(c *config) { c.db = label }
}

// WithEventFunc calls fn with every Dead and Recovered event, from the
// goroutine running [Notify] or [Durable], before the bridge goes on (for a
// log line; fn must not block). By default nothing is called. Notify
// publishes those events on NATS either way; Durable does not (nothing is
// lost when its stream reconnects).
func WithEventFunc(fn func(pgnotify.Event)) Option {
	return func(c *config) { c.onEvent = fn }
}

// WithAckTimeout bounds how long [Durable] waits for JetStream's
// acknowledgements of a batch before it publishes the batch again
// (JetStream drops what it already holds by Nats-Msg-Id). The default is
// 10s; d <= 0 keeps it.
func WithAckTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.ackTimeout = d
		}
	}
}

// WithLogger logs what the bridge retries: a batch JetStream did not
// acknowledge in time, published again. By default nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}
