// Package pgnotify is PostgreSQL LISTEN/NOTIFY for pgx v5: a notification
// manager that yields events from a changing set of connections, with the
// helpers around it.
//
//	m := pgnotify.NewManager()
//	defer m.Close(ctx)
//	conn, err := pgx.Connect(ctx, url)
//	if err != nil { ... }
//	if err := pgnotify.Listen(ctx, conn, "jobs", "Orders"); err != nil { ... }
//	if err := m.Add(ctx, conn); err != nil { ... }
//	for ev, err := range m.Events(ctx) {
//		if err != nil { ... }
//		switch ev.Kind {
//		case pgnotify.Batch:
//			for _, n := range ev.Notifications {
//				fmt.Println(n.Channel, n.Payload)
//			}
//		case pgnotify.Idle, pgnotify.Dead, pgnotify.Recovered:
//			// see below
//		}
//	}
//
// # Ownership
//
// A connection added to a [Manager] belongs to it: one waiter goroutine per
// connection reads from it, and nothing else may touch it until
// [Manager.Remove] returns it. To run queries on a member, lend it to a
// function with [Manager.Do]; change its channels with [Manager.Listen],
// [Manager.Unlisten] and [Manager.UnlistenAll], so that recovery knows them.
// A Do function gets the connection for itself: it must leave it outside a
// transaction (Do rolls back one left open, and says so), and inside it
// the manager refuses requests for that same connection rather than wait
// for itself. The consumer, one goroutine at a time, calls [Manager.Next],
// [Manager.Events] or [Manager.Drain] (a second goroutine gets an error);
// every other method is safe from any goroutine, also while Next is
// blocked. [Manager.Close] returns by its context's end; it cancels the
// query of a Do function running meanwhile and waits for the function, and
// a Do returns only once the manager has let go of the connection. Close
// called inside a Do function does not wait for it: that connection is
// closed when the function returns.
//
// # Timeouts and drain
//
// By default [Manager.Next] blocks until an event. With a timeout d > 0
// ([Manager.SetTimeout] or [WithTimeout]) it yields an [Idle] event when
// nothing arrived within d. With a timeout of 0 it drains: one pass makes a
// round trip on every live connection and yields every notification
// committed before the pass began, then io.EOF; the next call starts a new
// pass. [Manager.Drain] is one pass returned as a slice, whatever the
// timeout. Next returns io.EOF itself, unwrapped, also when the set is
// empty, and [ErrClosed] after [Manager.Close]. [Manager.Events] stops
// quietly at the end of a drain pass only: when the set empties otherwise
// (every member removed, or dead without [WithReconnect]) it yields
// [ErrNoConns], which matches io.EOF, so a loop that returns its error
// never ends silently when its last connection dies.
//
// # Death and recovery
//
// A connection whose read fails (pg_terminate_backend, server shutdown or
// crash, a protocol violation, a failed health ping) yields the
// notifications it had received, then a [Dead] event, and moves to the
// garbage set ([Manager.Garbage]) with its cause (the server's
// *pgconn.PgError, such as 57P01, where there was one). The other members
// carry on. [Manager.Recover], or [WithReconnect] automatically, replaces
// dead connections and yields a [Recovered] event once the new one listens
// on the same channels and before anything it receives. Notifications sent
// while a connection was dead are lost, as NOTIFY always loses them:
// Recovered is the gap signal, the moment to resynchronise from the
// application's own tables.
//
// A request on a member that died returns an error matching [ErrDead] that
// unwraps to the cause. [Manager.Stats] counts what happened (deaths by
// cause, recoveries, failed reconnect attempts, health checks) and reports
// the pending depth and the server's queue usage.
//
// # Health
//
// A waiter only reads, and a half-open TCP connection never fails a read.
// So a member that received nothing for a while is checked
// ([WithHealthCheck]; on by default, every 30s with a 10s timeout), and a
// failed or slow check means Dead. The check is one round trip, as a ping
// would be, that also confirms that the session still listens on every
// channel the manager tracks for it (pg_listening_channels()): a session
// whose LISTEN state vanished (UNLISTEN * or DISCARD ALL inside a Do, a
// pooler that moved it) dies with [ErrNotListening], and recovery LISTENs
// again. It also samples the server's notification queue
// ([Stats].QueueUsage); at 50 % a logger gets a warning, once per rise.
//
// # Poolers, standbys and failover
//
// LISTEN needs a session that lasts. Behind a transaction- or
// statement-mode pooler (PgBouncer, Supavisor, RDS Proxy) each transaction
// may run on another server connection, so [Listen], [Manager.Listen] and
// [Manager.Add] of a listening connection fail with [ErrNoSession] when the
// LISTEN did not persist into the next transaction: connect directly or
// through a session-mode pool. What cannot be detected: a pooler that hands
// the next transaction to the same server connection (a pool of one server
// connection, or a quiet pool that reuses the last one) looks like a
// session until it moves the session; the next health check then finds it
// deaf ([ErrNotListening]), between checks it hears nothing. A pooler that
// passes the server's own process ID to the client looks like a direct
// connection and is not checked at all (PgBouncer does not).
//
// A hot standby cannot LISTEN (SQLSTATE 25006): [Listen], [Manager.Listen]
// and [Manager.Add] of any connection to a standby fail with [ErrStandby].
// A reconnect that lands on a standby is a failed attempt, retried with
// backoff, logged and counted, never a member that cannot hear. [Redial]
// keeps every host of the dead connection's config, its fallbacks and
// target_session_attrs, so with a multi-host connection string and
// target_session_attrs=read-write a Manager follows a promoted standby:
// [Dead], failed attempts while no primary is up, then [Recovered] on the
// new primary.
//
// # Backpressure
//
// Each member holds at most [WithMaxPending] notifications and
// [WithMaxPendingBytes] bytes for the consumer (2048 and 4 MiB by default).
// When its buffer is full its waiter stops reading: TCP pushes back, and
// the server keeps the rest in its notification queue. A round trip the
// manager makes (drain pass, Do, Listen, health ping) reads up to the
// server's ReadyForQuery and so may take in more than the bounds, up to the
// session's whole backlog; it is then yielded in bounded batches. Nothing
// is dropped and memory stays bounded, but a stalled consumer holds back
// the server's queue (8 GB, shared by the whole cluster; watch
// pg_notification_queue_usage()): once it is full, every NOTIFY in the
// cluster fails.
//
// Before PostgreSQL 19 every notifying commit wakes every listening backend
// of its database, so many listening connections on one database cost the
// server dearly: put many channels on few connections per database.
//
// # Channels and payloads
//
// Channel names are identifiers, always quoted: Listen(ctx, conn, "Foo")
// hears Notify with Channel "Foo", not "foo". Names the server would reject
// or silently truncate (empty, over 63 bytes, with a NUL byte, invalid
// UTF-8) fail with [ErrInvalidChannel] before anything is sent; payloads of
// 8000 bytes or more fail with [ErrPayloadTooLong]. Payloads always travel as
// bind parameters, never inside SQL.
//
// # Bus
//
// For many consumers in one process, package
// github.com/seed-c59d106d/pgnotify/bus holds one listening connection to
// one database and fans each notification out to the subscriptions of its
// channel, each with its own bounded buffer. Its events are this package's
// [Event] values ([Lagged] among them), and [ConnectFromPool] gives it a
// connection out of an application's pgxpool.
//
// Which to use: [Wait] for one connection read in the caller's goroutine;
// a [Manager] for one consumer of many connections, to one database or to
// many servers; a Bus for many consumers of one database, which then costs
// the server one listening backend instead of one per consumer. When a
// message must not be lost while nobody listens, use package
// github.com/seed-c59d106d/pgnotify/durable instead of NOTIFY: messages
// written into the WAL in the producer's transaction and read, at least
// once, from a replication slot (wal_level = logical).
//
// # Wait
//
// For one connection and no goroutines, [Wait] is an iterator that reads in
// the caller's goroutine, so the loop body may use the connection between
// notifications.
//
// # Helpers
//
// [Listen], [Unlisten], [UnlistenAll], [ListeningChannels] and [Notify] are
// one round trip each and all-or-nothing. [Notify] takes any [Execer], so a
// NOTIFY can ride in the application's own transaction.
package pgnotify
