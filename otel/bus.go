package otel

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/seed-c59d106d/pgnotify/bus"
)

// RegisterBus registers instruments over b.Stats. Call Unregister on the
// result when b is closed.
//
// Instruments:
//
//	messaging.client.consumed.messages  counter  notifications the Bus's connection received
//	pgnotify.bus.delivered              counter  notifications handed to subscriptions (one per subscription)
//	pgnotify.bus.dropped                counter  of those, dropped by OverflowDropOldest (Lagged)
//	pgnotify.connection.deaths          counter  times the Bus's connection died
//	pgnotify.connection.recoveries      counter  times a new connection replaced a dead one
//	pgnotify.bus.connected              gauge    1 while the connection is live and listening, else 0
//	pgnotify.bus.subscriptions          gauge    live subscriptions
//	pgnotify.bus.channels               gauge    channels LISTENed now
//	pgnotify.queue.usage                gauge    the server's notification queue, a fraction
func RegisterBus(b *bus.Bus, opts ...Option) (metric.Registration, error) {
	if b == nil {
		return nil, errNil
	}
	c := newConfig(opts)
	base := c.base("bus")
	consumed := with(base, attribute.String("messaging.operation.name", "receive"))
	in := &instruments{m: c.meter()}
	var (
		received   = in.counter("messaging.client.consumed.messages", "{message}", "Notifications the Bus's connection received.")
		delivered  = in.counter("pgnotify.bus.delivered", "{message}", "Notifications handed to subscriptions, one per subscription.")
		dropped    = in.counter("pgnotify.bus.dropped", "{message}", "Notifications dropped by OverflowDropOldest subscriptions (reported by Lagged).")
		deaths     = in.counter("pgnotify.connection.deaths", "{death}", "Times the Bus's connection died.")
		recoveries = in.counter("pgnotify.connection.recoveries", "{recovery}", "Times a new connection replaced a dead one.")
		connected  = in.gauge("pgnotify.bus.connected", "1", "1 while the Bus's connection is live and listens on the channels wanted, else 0.")
		subs       = in.gauge("pgnotify.bus.subscriptions", "{subscription}", "Live subscriptions.")
		chans      = in.gauge("pgnotify.bus.channels", "{channel}", "Channels the connection LISTENs on now.")
		queue      = in.ratio("pgnotify.queue.usage", "The server's notification queue usage, as last sampled by a health check.")
	)
	all := metric.WithAttributes(base...)
	return in.register(func(_ context.Context, o metric.Observer) error {
		s := b.Stats()
		o.ObserveInt64(received, sat(s.Received), consumed)
		o.ObserveInt64(delivered, sat(s.Delivered), all)
		o.ObserveInt64(dropped, sat(s.Dropped), all)
		o.ObserveInt64(deaths, sat(s.Deaths), all)
		o.ObserveInt64(recoveries, sat(s.Reconnects), all)
		up := int64(0)
		if s.Connected {
			up = 1
		}
		o.ObserveInt64(connected, up, all)
		o.ObserveInt64(subs, int64(s.Subscriptions), all)
		o.ObserveInt64(chans, int64(s.Channels), all)
		o.ObserveFloat64(queue, s.QueueUsage, all)
		return nil
	})
}
