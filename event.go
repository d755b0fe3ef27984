package pgnotify

import (
	"strconv"

	"github.com/jackc/pgx/v5"
)

// Kind says what an [Event] reports.
type Kind uint8

const (
	// Batch carries Notifications received on Conn since its last Batch.
	Batch Kind = iota + 1
	// Idle reports that nothing happened within the manager's timeout.
	Idle
	// Dead reports that Conn failed; Err says why. A Manager moved it to
	// the garbage set; a bus.Bus or durable.Stream reconnects by itself.
	Dead
	// Recovered reports that Conn replaces Replaced, a dead connection, and
	// listens on its channels again. Notifications sent while Replaced was
	// dead are lost: this is the signal to resynchronise. (A
	// durable.Stream loses nothing: what was committed meanwhile comes next.)
	Recovered
	// Lagged reports that a bus.Subscription's buffer overflowed under
	// bus.OverflowDropOldest (package github.com/seed-c59d106d/pgnotify/bus):
	// Dropped notifications, the oldest, were lost.
	Lagged
)

// String returns the constant's name, or Kind(n) for an unknown value.
func (k Kind) String() string {
	switch k {
	case Batch:
		return "Batch"
	case Idle:
		return "Idle"
	case Dead:
		return "Dead"
	case Recovered:
		return "Recovered"
	case Lagged:
		return "Lagged"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// An Event is one step of a stream: a [Manager]'s, a bus.Subscription's
// (package github.com/seed-c59d106d/pgnotify/bus) or a durable.Stream's
// (package github.com/seed-c59d106d/pgnotify/durable). Which fields are set
// depends on Kind; Conn and Replaced are set only by a Manager.
type Event struct {
	Kind Kind
	// Conn is the member the event is about: set by a Manager, except for
	// Idle.
	Conn *pgx.Conn
	// Notifications holds a Batch, in the order the server sent them. The
	// slice and its elements belong to the caller and may be kept after the
	// next call of Next.
	Notifications []*Notification
	// Err is why the connection died (Dead only). The server's
	// *pgconn.PgError, such as 57P01 for pg_terminate_backend, is reachable
	// with errors.As.
	Err error
	// Replaced is the dead connection that Conn replaces (Recovered only).
	Replaced *pgx.Conn
	// Dropped is how many notifications a subscription lost to its buffer's
	// overflow (Lagged only).
	Dropped int
	// LSN is a durable batch's commit LSN: the same when the batch is
	// delivered again, increasing in commit order. It is 0 for NOTIFY
	// batches.
	LSN uint64
}

// Garbage is a dead connection held by the manager until [Manager.Recover]
// replaces it or [Manager.TakeGarbage] hands it back.
type Garbage struct {
	// Conn is closed; its PID and config remain readable.
	Conn *pgx.Conn
	// Err is why it died; the server's *pgconn.PgError (such as 57P01) where
	// there was one.
	Err error
	// Channels are the channels it was listening on: those it had when it
	// was added, changed by every Manager.Listen and Manager.Unlisten since.
	Channels []string
}
