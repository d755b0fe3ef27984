package otel

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/seed-c59d106d/pgnotify/durable"
)

// RegisterStream registers instruments over s.Stats. Call Unregister on the
// result when s is closed.
//
// Instruments:
//
//	messaging.client.consumed.messages  counter  messages read from the slot
//	pgnotify.durable.batches            counter  transactions (Batch events) read from the slot
//	pgnotify.connection.recoveries      counter  replication connections lost and replaced
//	pgnotify.durable.acked_lsn          gauge    the position acknowledged on the slot
//	pgnotify.durable.lag                gauge    bytes of WAL between the acknowledged position and the server's WAL end
func RegisterStream(s *durable.Stream, opts ...Option) (metric.Registration, error) {
	if s == nil {
		return nil, errNil
	}
	c := newConfig(opts)
	base := c.base("durable")
	consumed := with(base, attribute.String("messaging.operation.name", "receive"))
	in := &instruments{m: c.meter()}
	var (
		messages   = in.counter("messaging.client.consumed.messages", "{message}", "Messages read from the replication slot.")
		batches    = in.counter("pgnotify.durable.batches", "{batch}", "Transactions (Batch events) read from the replication slot.")
		recoveries = in.counter("pgnotify.connection.recoveries", "{recovery}", "Replication connections lost and replaced.")
		acked      = in.gauge("pgnotify.durable.acked_lsn", "By", "The WAL position acknowledged on the slot.")
		lag        = in.gauge("pgnotify.durable.lag", "By", "WAL between the acknowledged position and the server's WAL end: what the slot keeps on disk for this consumer.")
	)
	all := metric.WithAttributes(base...)
	return in.register(func(_ context.Context, o metric.Observer) error {
		st := s.Stats()
		o.ObserveInt64(messages, sat(st.Messages), consumed)
		o.ObserveInt64(batches, sat(st.Batches), all)
		o.ObserveInt64(recoveries, sat(st.Reconnects), all)
		o.ObserveInt64(acked, sat(st.AckedLSN), all)
		o.ObserveInt64(lag, st.LagBytes, all)
		return nil
	})
}
