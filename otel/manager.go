package otel

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/seed-c59d106d/pgnotify"
)

// RegisterManager registers instruments over m.Stats. Call Unregister on
// the result when m is closed, or the callback keeps reading a closed
// Manager's last counters.
//
// Instruments:
//
//	messaging.client.consumed.messages  counter  notifications yielded in Batch events
//	pgnotify.batches                    counter  Batch events
//	pgnotify.idle_ticks                 counter  Idle events
//	pgnotify.connection.deaths          counter  Dead events, by pgnotify.cause
//	pgnotify.connection.recoveries      counter  Recovered events
//	pgnotify.reconnect.attempts         counter  dials made to replace dead connections
//	pgnotify.reconnect.failures         counter  of those, the failed ones
//	pgnotify.health_checks              counter  health round trips of quiet connections
//	pgnotify.connections                gauge    by pgnotify.connection.state: live, garbage, recovering
//	pgnotify.pending                    gauge    notifications received, not yet yielded
//	pgnotify.pending.size               gauge    their size in bytes
//	pgnotify.queue.usage                gauge    the server's notification queue, a fraction
func RegisterManager(m *pgnotify.Manager, opts ...Option) (metric.Registration, error) {
	if m == nil {
		return nil, errNil
	}
	c := newConfig(opts)
	base := c.base("manager")
	consumed := with(base, attribute.String("messaging.operation.name", "receive"))
	in := &instruments{m: c.meter()}
	var (
		messages   = in.counter("messaging.client.consumed.messages", "{message}", "Notifications yielded to the consumer.")
		batches    = in.counter("pgnotify.batches", "{batch}", "Batch events yielded.")
		idle       = in.counter("pgnotify.idle_ticks", "{tick}", "Idle events yielded.")
		deaths     = in.counter("pgnotify.connection.deaths", "{death}", "Connections that died (Dead events), by cause.")
		recoveries = in.counter("pgnotify.connection.recoveries", "{recovery}", "Dead connections replaced (Recovered events).")
		attempts   = in.counter("pgnotify.reconnect.attempts", "{attempt}", "Dials made to replace dead connections.")
		failures   = in.counter("pgnotify.reconnect.failures", "{attempt}", "Reconnect attempts that failed.")
		health     = in.counter("pgnotify.health_checks", "{check}", "Health round trips of quiet connections.")
		conns      = in.gauge("pgnotify.connections", "{connection}", "Connections by state: live, garbage, recovering.")
		pending    = in.gauge("pgnotify.pending", "{notification}", "Notifications received and not yet yielded.")
		pendingSz  = in.gauge("pgnotify.pending.size", "By", "Size of the notifications pending.")
		queue      = in.ratio("pgnotify.queue.usage", "The server's notification queue usage, as last sampled by a health check.")
	)
	all := metric.WithAttributes(base...)
	return in.register(func(_ context.Context, o metric.Observer) error {
		s := m.Stats()
		o.ObserveInt64(messages, sat(s.Notifications), consumed)
		o.ObserveInt64(batches, sat(s.Batches), all)
		o.ObserveInt64(idle, sat(s.IdleTicks), all)
		for cause, n := range s.DeathsByCause {
			o.ObserveInt64(deaths, sat(n), with(base, CauseKey.String(cause)))
		}
		o.ObserveInt64(recoveries, sat(s.Recoveries), all)
		o.ObserveInt64(attempts, sat(s.ReconnectAttempts), all)
		o.ObserveInt64(failures, sat(s.ReconnectFailures), all)
		o.ObserveInt64(health, sat(s.HealthChecks), all)
		o.ObserveInt64(conns, int64(s.Members), with(base, StateKey.String("live")))
		o.ObserveInt64(conns, int64(s.Garbage), with(base, StateKey.String("garbage")))
		o.ObserveInt64(conns, int64(s.Recovering), with(base, StateKey.String("recovering")))
		o.ObserveInt64(pending, int64(s.Pending), all)
		o.ObserveInt64(pendingSz, int64(s.PendingBytes), all)
		o.ObserveFloat64(queue, s.QueueUsage, all)
		return nil
	})
}
