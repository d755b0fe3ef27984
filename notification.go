package pgnotify

import (
	"time"

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
