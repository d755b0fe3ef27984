package pgnotify

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Notification is one notification as the server sent it: the PID of the
// notifying backend, the channel, and the payload. It is pgconn's type, so
// values pass between pgnotify and pgx without conversion.
type Notification = pgconn.Notification

// NoTimeout makes a wait block until a notification arrives, the context
// ends, or the connection is lost; no idle ticks are produced. It is the
// default timeout of a [Manager] and may be passed to [Wait].
const NoTimeout time.Duration = -1

// cancelledCtx is always done. Given it, pgx's WaitForNotification returns a
// notification it already buffered without touching the socket (it checks
// the context before any I/O), or a context error once none is left.
var cancelledCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// popBuffered appends the notifications pgx buffered on conn, without I/O.
func popBuffered(conn *pgx.Conn, into []*Notification) []*Notification {
	for {
		n, err := conn.WaitForNotification(cancelledCtx)
		if n == nil || err != nil {
			return into
		}
		into = append(into, n)
	}
}
