// Package bus fans PostgreSQL notifications out to many subscriptions in
// one process over one listening connection to one database.
//
// Every notifying commit wakes every listening backend of the database
// (PostgreSQL 18 and before), so a thousand consumers with a connection
// each cost the server far more than one connection shared by all. A [Bus]
// holds that one connection, LISTENs a channel while at least one
// [Subscription] wants it and UNLISTENs it when the last one leaves.
//
//	b := bus.New(pgnotify.ConnectFromPool(pool)) // one connection, hijacked from the pool
//	defer b.Close(ctx)
//	sub, err := b.Subscribe(ctx, []string{"orders"}) // returns once LISTEN is active
//	if err != nil {
//		return err
//	}
//	defer sub.Close()
//	for ev, err := range sub.Events(ctx) {
//		if err != nil {
//			return err
//		}
//		switch ev.Kind {
//		case pgnotify.Batch: // ev.Notifications: shared, read-only
//		case pgnotify.Lagged: // ev.Dropped were lost: resynchronise
//		case pgnotify.Dead: // what is committed until Recovered is lost
//		case pgnotify.Recovered: // listening again: resynchronise
//		}
//	}
//
// # What it uses of pgnotify
//
// The Bus sits over package pgnotify the way pgxpool sits over pgx: its
// connection lives in an internal [pgnotify.Manager], used only through
// the Manager's exported API, so health checks, the pending bound and
// recovery are the Manager's. Its events are [pgnotify.Event] values of
// kinds [pgnotify.Batch], [pgnotify.Lagged], [pgnotify.Dead] and
// [pgnotify.Recovered]; it dials with a [pgnotify.ConnectFunc] (see
// [pgnotify.ConnectFromPool]); channel names are checked with
// [pgnotify.ValidateChannel]; and it returns [pgnotify.ErrClosed] after
// Close. Its reconnect backoff is pgnotify's internal one. Package
// pgnotify knows nothing of this one.
//
// # Buffers and overflow
//
// Each subscription has its own bounded buffer ([WithBuffer]) and policy
// ([WithOverflow]). Under [OverflowDropOldest], the default, a reader that
// falls behind loses the oldest notifications, gets a [pgnotify.Lagged]
// event with the exact count, and never slows anyone else. Under
// [OverflowBlock] nothing is lost and the whole Bus waits for the reader:
// TCP pushes back and the server's notification queue grows.
//
// # Death and recovery
//
// When the connection dies, every subscription gets [pgnotify.Dead]; once
// a new connection listens on the live subscriptions' channels, each gets
// [pgnotify.Recovered], the moment to resynchronise from the application's
// own tables. The Bus redials by itself ([WithReconnect]); if its pool was
// closed, it ends for good and every subscription's Next says so.
//
// # Poolers, standbys and failover
//
// The Bus's connection must hold a session on a primary. Through a
// transaction- or statement-mode pooler (PgBouncer, Supavisor, RDS Proxy)
// [Bus.Subscribe] fails with an error matching [pgnotify.ErrNoSession], and
// on a hot standby with one matching [pgnotify.ErrStandby]; a session-mode
// pooler works. A pooler that runs the next transaction on the same server
// connection (a pool of one always does) cannot be told from a session
// until it moves the session: the health check then finds the connection
// no longer listening ([pgnotify.ErrNotListening]), and subscriptions get
// Dead, then Recovered. To follow a failover, dial a multi-host connection
// string with target_session_attrs=read-write: subscriptions get Dead when
// the primary is lost and Recovered once a new primary listens; a
// reconnect that lands on a standby is a failed attempt, logged and
// retried, never Recovered. [Stats].QueueUsage says how full the server's
// notification queue is.
package bus
