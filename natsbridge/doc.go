// Package natsbridge carries pgnotify's notifications onto NATS, and
// package durable's messages into JetStream, so that one process listens to
// PostgreSQL and NATS fans out to a fleet.
//
// Every listening connection costs PostgreSQL a wake-up per notifying
// commit; a fleet of hundreds of processes each listening does not scale.
// A bridge listens once:
//
//	nc, err := nats.Connect(natsURL)
//	...
//	m := pgnotify.NewManager(pgnotify.WithReconnect(pgnotify.Redial, 0, 0))
//	err = m.Add(ctx, conn) // conn already LISTENs on "orders"
//	...
//	err = natsbridge.Notify(ctx, m, nc) // "orders" → subject pgnotify.orders
//
// and each process subscribes to the subjects it needs (pgnotify.orders,
// pgnotify.>, and pgnotify._events for the Dead and Recovered events).
//
// # Two modes, two guarantees
//
// [Notify] publishes on NATS core, at most once, like NOTIFY itself: what
// is sent while the bridge does not listen is lost, and the Dead and
// Recovered events tell consumers when to resynchronise from their tables.
//
// [Durable] reads a [durable.Stream] and publishes into JetStream, at least
// once into NATS and once in the stream: a batch is acknowledged on the
// replication slot only after JetStream has acknowledged every message of it,
// and each message carries a Nats-Msg-Id (slot:commitLSN:index) that
// JetStream's duplicate window uses to drop what a restarted bridge
// publishes again.
//
//	s, err := durable.Open(ctx, url, "bridge", []string{"invoices"}, durable.WithManualAck())
//	...
//	defer s.Close(context.WithoutCancel(ctx))
//	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
//	...
//	err = natsbridge.Durable(ctx, s, js) // a stream must capture pgnotify.>
//
// # High availability
//
// A slot has one reader at a time: a second bridge's [durable.Open] fails
// with [durable.ErrSlotInUse] until the first one's connection is gone, so
// two bridges that retry Open take over from each other with no coordinator
// (the pgnotify bridge command does this). For Notify, two bridges publish
// everything twice: run one, restarted by a supervisor, or have consumers
// tolerate duplicates.
//
// # Subjects
//
// Channel c goes to subject prefix + "." + c ([WithPrefix]; "pgnotify" by
// default). PostgreSQL channels may contain what NATS subjects cannot:
// whitespace, the wildcards '*' and '>', empty tokens ("a..b"); such a
// channel is an [ErrSubject] error before anything is published. A '.' in a
// channel name makes more subject tokens, which wildcard subscriptions see.
//
// This package imports nats.go; packages pgnotify, bus and durable do not,
// so a program that does not import natsbridge does not compile NATS in.
package natsbridge
