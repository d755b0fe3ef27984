package pgnotify

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Sentinel errors. Match them with [errors.Is]; the errors pgnotify returns
// wrap them with the detail (which connection, which name).
var (
	// ErrClosed is returned by every Manager method after [Manager.Close].
	ErrClosed = errors.New("pgnotify: closed")

	// ErrNoConns is the last error [Manager.Events] yields when the set is
	// empty (every member removed, or dead with nothing to replace it)
	// and the caller did not ask for a drain, so that a loop which returns
	// on error does not end as if all were well. It matches io.EOF with
	// [errors.Is], the end of the stream [Manager.Next] returns itself.
	ErrNoConns = fmt.Errorf("pgnotify: no connection left to listen on "+
		"(every member was removed, or died with no WithReconnect to replace it): %w", io.EOF)

	// ErrAlreadyAdded is returned by [Manager.Add] for a connection that is
	// already a member (or is named twice in one call).
	ErrAlreadyAdded = errors.New("pgnotify: connection already added")

	// ErrNotManaged is returned for a connection that is not a member of the
	// manager.
	ErrNotManaged = errors.New("pgnotify: connection not managed")

	// ErrInvalidChannel is returned for a channel name the server would
	// reject or silently change: empty, longer than 63 bytes, containing a NUL
	// byte, or not valid UTF-8.
	ErrInvalidChannel = errors.New("pgnotify: invalid channel name")

	// ErrPayloadTooLong is returned for a payload of 8000 bytes or more, which
	// the server would reject.
	ErrPayloadTooLong = errors.New("pgnotify: payload too long")

	// ErrDead matches, with [errors.Is], an error caused by the death of a
	// member: a request on a member that has died, or a Do whose member died
	// under it. The same error unwraps to the cause, so the server's
	// *pgconn.PgError stays reachable with [errors.As].
	ErrDead = errors.New("pgnotify: connection dead")

	// ErrNotListening is the cause of death of a member whose session no
	// longer listens on a channel the Manager tracks for it, found by a
	// health check: an UNLISTEN * or a DISCARD ALL run inside a Do, or a
	// pooler that moved the session to another server connection. Its
	// Stats.DeathsByCause class is "not_listening"; recovery (Recover or
	// WithReconnect) LISTENs again on a new connection.
	ErrNotListening = errors.New("pgnotify: session no longer listens on its channels")

	// ErrNoSession is returned by Listen, Manager.Listen and Manager.Add
	// when a LISTEN did not persist into the next transaction: the
	// connection goes through a transaction- or statement-mode pooler
	// (PgBouncer, Supavisor, RDS Proxy), which hands each transaction to
	// any server connection, so the session would never hear a
	// notification. Connect directly to PostgreSQL or through a
	// session-mode pool. A reconnect that lands behind such a pooler is a
	// failed attempt.
	ErrNoSession = errors.New("pgnotify: LISTEN did not persist into the next transaction (a transaction-mode pooler?): " +
		"connect directly to PostgreSQL or through a session-mode pool")

	// ErrStandby is returned by Listen, Manager.Listen and Manager.Add for a
	// connection to a hot standby, where LISTEN fails (SQLSTATE 25006) and
	// no notification is ever delivered. Connect to the primary: with
	// several hosts, add target_session_attrs=read-write to the connection
	// string. A reconnect that lands on a standby is a failed attempt.
	ErrStandby = errors.New("pgnotify: connected to a hot standby, which cannot LISTEN: connect to the primary " +
		"(with several hosts, add target_session_attrs=read-write to the connection string)")
)

// Errors with no sentinel: a program has nothing to do about them but fix
// the call.
var (
	errNotNew  = errors.New("pgnotify: Manager not made by NewManager")
	errNilConn = errors.New("pgnotify: nil connection")
	// errConcurrentNext is returned by a Next, Events or Drain called while
	// another goroutine is inside one of them: they are the consumer's.
	errConcurrentNext = errors.New("pgnotify: Next called from two goroutines at once")
	// errLent is returned for a request on a member made from inside the Do
	// function it is lent to: waiting for the Do to end would never return.
	errLent = errors.New("pgnotify: connection is lent to this goroutine's Do: use the *pgx.Conn passed to fn")

	errNilFunc       = errors.New("pgnotify: Do: nil function")
	errNilExecer     = errors.New("pgnotify: notify: nil Execer")
	errNilDial       = errors.New("pgnotify: Recover: nil DialFunc")
	errNoGarbageConn = errors.New("pgnotify: Redial: the garbage entry has no connection")
	// errAddClosed is an Add's connError cause, which names the call.
	errAddClosed = errors.New("closed")
)

// Causes of a member's death, classed by causeClass for Stats.
var (
	// errClosedInDo is the cause of death of a connection a Do function
	// closed without returning an error.
	errClosedInDo = errors.New("pgnotify: connection closed inside Do")

	// errHealth marks a death found by a health ping. Its class is that of
	// what the ping met (see causeClass).
	errHealth = errors.New("pgnotify: health check failed")

	// errClosedInHealthCheck and errClosedInPing: pgx closed the
	// connection during the round trip without returning an error.
	errClosedInHealthCheck = errors.New("pgnotify: connection closed during health check")
	errClosedInPing        = errors.New("pgnotify: connection closed during ping")
)

// errTxLeftOpen is why Do failed when its function left a transaction
// open: a session in a transaction receives no notification.
var errTxLeftOpen = errors.New("pgnotify: Do: fn left the connection in a transaction")

// Replies a server should not send: the query's result has the wrong shape.
var (
	errPIDReply     = errors.New("pgnotify: listen: unexpected reply to pg_backend_pid()")
	errSessionReply = errors.New("pgnotify: unexpected reply to the session query")
)

// Why a recovery attempt's new connection was refused: causes that the
// attempt's connError wraps, so they carry no "pgnotify: " prefix.
var (
	errDialedNil    = errors.New("DialFunc returned a nil connection")
	errDialedClosed = errors.New("DialFunc returned a closed connection")
	errGarbageTaken = errors.New("the dead connection was taken with TakeGarbage")
)

// connError says which connection of a call failed. Its message keeps one
// "pgnotify: " prefix however the cause was made.
type connError struct {
	op  string // "add", "remove", "recover"
	who string // "connection 1" (its place in the call), "connection (pid 123)"
	err error
}

func (e *connError) Error() string {
	return "pgnotify: " + e.op + ": " + e.who + ": " + strings.TrimPrefix(e.err.Error(), "pgnotify: ")
}

func (e *connError) Unwrap() error { return e.err }

// nth names the connection at index i of a call's arguments.
func nth(i int) string { return "connection " + strconv.Itoa(i) }

// errNotHeard is the cause when a connection's notifications go somewhere
// other than its own pgx buffer, where pgnotify reads them: its config's
// OnNotification is set, most often because it was dialled from another
// connection's Config(), which carries that connection's buffer.
var errNotHeard = errors.New("pgnotify: the connection's notifications go to its config's OnNotification, " +
	"not to the connection (dialled from another connection's Config()? set OnNotification to nil in the copy, or use Redial)")

// channelError says which channel name was rejected and why. It unwraps to
// ErrInvalidChannel.
type channelError struct {
	name   string
	reason string
}

func (e *channelError) Error() string {
	return fmt.Sprintf("pgnotify: invalid channel name %q: %s", truncate(e.name, 80), e.reason)
}

func (e *channelError) Unwrap() error { return ErrInvalidChannel }

// payloadError says which message's payload was too long. The payload itself
// never appears in the error: it may hold data the application keeps private.
type payloadError struct {
	channel string
	size    int
}

func (e *payloadError) Error() string {
	return fmt.Sprintf("pgnotify: payload for channel %q is %d bytes; the limit is %d",
		truncate(e.channel, 80), e.size, maxPayloadLen)
}

func (e *payloadError) Unwrap() error { return ErrPayloadTooLong }

// deadError is returned for a request on a member that has died. It matches
// ErrDead and unwraps to the cause of death, so the server's
// *pgconn.PgError stays reachable.
type deadError struct {
	cause error
}

func (e *deadError) Error() string { return "pgnotify: connection died: " + e.cause.Error() }

func (e *deadError) Unwrap() error { return e.cause }

// Is makes a deadError match ErrDead as well as its cause.
func (e *deadError) Is(target error) bool { return target == ErrDead }

// notListeningError is a health check's finding that the session lost
// channels the Manager tracks. It matches ErrNotListening.
type notListeningError struct {
	missing []string // sorted, at most a few named
	of      int      // channels tracked
}

func (e *notListeningError) Error() string {
	names := make([]string, min(len(e.missing), 3))
	for i, c := range e.missing[:len(names)] {
		names[i] = strconv.Quote(truncate(c, 80))
	}
	more := ""
	if len(e.missing) > len(names) {
		more = fmt.Sprintf(" and %d more", len(e.missing)-len(names))
	}
	return fmt.Sprintf("pgnotify: session no longer listens on %d of its %d channels (%s%s): "+
		"UNLISTEN or DISCARD ALL inside Do (use Manager.Unlisten), or a pooler that moved the session",
		len(e.missing), e.of, strings.Join(names, ", "), more)
}

func (e *notListeningError) Is(target error) bool { return target == ErrNotListening }

// noSessionError says what showed that the session did not persist. It
// matches ErrNoSession.
type noSessionError struct {
	op     string // "listen", or "" when the caller names the operation
	detail string
}

func (e *noSessionError) Error() string {
	op := ""
	if e.op != "" {
		op = e.op + ": "
	}
	return "pgnotify: " + op + strings.TrimPrefix(ErrNoSession.Error(), "pgnotify: ") + " (" + e.detail + ")"
}

func (e *noSessionError) Unwrap() error { return ErrNoSession }

// standbyError is a connection found on a hot standby. It matches
// ErrStandby and unwraps to the server's error when there was one (LISTEN's
// SQLSTATE 25006), so the *pgconn.PgError stays reachable.
type standbyError struct {
	op  string // "listen", or "" when the caller names the operation
	err error  // the server's error, or nil when pg_is_in_recovery() said so
}

func (e *standbyError) Error() string {
	msg := ErrStandby.Error()
	if e.op != "" {
		msg = "pgnotify: " + e.op + ": " + strings.TrimPrefix(msg, "pgnotify: ")
	}
	if e.err != nil {
		msg += ": " + e.err.Error()
	}
	return msg
}

func (e *standbyError) Unwrap() error { return e.err }

func (e *standbyError) Is(target error) bool { return target == ErrStandby }

// truncate shortens s for an error message without splitting a UTF-8
// sequence's worth of meaning; names are short, so this rarely triggers.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
