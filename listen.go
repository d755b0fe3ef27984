package pgnotify

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// maxChannelLen is the longest channel name the server keeps intact:
// NAMEDATALEN-1 bytes. LISTEN silently truncates a longer identifier, so the
// session would listen on a different channel than the one named.
const maxChannelLen = 63

// maxPayloadLen is the longest payload the server accepts in its default
// build: NOTIFY rejects one of 8000 bytes or more ("payload string too
// long"), so pgnotify rejects it before anything is sent.
const maxPayloadLen = 7999

// Execer runs one SQL statement with bind parameters. *pgx.Conn, pgx.Tx,
// *pgxpool.Pool and *pgxpool.Conn satisfy it, so [Notify] can run on a
// dedicated connection, on a pool, or inside the application's own
// transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Message is one notification to send with [Notify]: the channel name, used
// verbatim (it is case-sensitive and never folded to lower case), and the
// payload, at most 7999 bytes.
type Message struct{ Channel, Payload string }

// ValidateChannel reports whether name can be used as a channel name exactly
// as written. It returns an error wrapping [ErrInvalidChannel] for an empty
// name, a name longer than 63 bytes (LISTEN would silently truncate it to
// NAMEDATALEN-1 bytes and listen on a different channel), a name holding a
// NUL byte, or a name that is not valid UTF-8. Every other name is valid,
// including names with upper-case letters, spaces, quotes or SQL keywords:
// pgnotify always quotes channel names, so [Listen]("Foo") hears
// [Notify] on "Foo" and not on "foo".
//
// ValidateChannel sends nothing; [Listen], [Unlisten] and [Notify] call it on
// every name before they send anything.
func ValidateChannel(name string) error {
	switch {
	case name == "":
		return &channelError{name: name, reason: "empty"}
	case len(name) > maxChannelLen:
		return &channelError{name: name, reason: fmt.Sprintf("%d bytes; the limit is %d", len(name), maxChannelLen)}
	case strings.IndexByte(name, 0) >= 0:
		return &channelError{name: name, reason: "contains a NUL byte"}
	case !utf8.ValidString(name):
		return &channelError{name: name, reason: "not valid UTF-8"}
	}
	return nil
}

// quoteIdent returns name as a quoted SQL identifier: wrapped in double
// quotes, with each double quote inside doubled. Callers validate name first;
// quoting alone does not make a NUL byte or an over-long name safe.
func quoteIdent(name string) string {
	return `"` + strings.ReplaceAll(name, `"`, `""`) + `"`
}

// Listen makes conn's session listen on channels. Every name is checked with
// [ValidateChannel] first; if any is invalid, nothing is sent. Names repeated
// in one call are sent once, and listening on a channel the session already
// listens on is not an error. No channels means no round trip and a nil
// error.
//
// All the LISTEN commands go in one simple-protocol query, one round trip,
// which the server runs as one implicit transaction: either the session
// listens on all of channels or, on error, on none of them. Inside an open
// transaction on conn, the LISTENs take effect when it commits.
//
// On a hot standby Listen fails with an error matching [ErrStandby]. When
// the LISTENs did not persist into the next transaction, it fails with one
// matching [ErrNoSession]: the connection goes through a transaction- or
// statement-mode pooler. That check costs a second round trip
// (pg_listening_channels() in a transaction of its own) only on a
// connection whose server process is not the one pgx connected to, which
// is what a pooler looks like; it is skipped inside the caller's
// transaction. A pooler that hands the next transaction to the same server
// connection, as a pool of one server connection always does, cannot be
// told from a session pool until it moves the session: a Manager's health
// check then finds the session deaf ([ErrNotListening]).
//
// Listen uses conn as pgx always does: the caller must not use conn from
// another goroutine meanwhile, and cancelling ctx while the query is on the
// wire closes conn. For a connection owned by a [Manager], use
// [Manager.Listen] instead.
func Listen(ctx context.Context, conn *pgx.Conn, channels ...string) error {
	return listenCommand(ctx, conn, "LISTEN", channels)
}

// Unlisten makes conn's session stop listening on channels, with the same
// contract as [Listen]: names are validated before anything is sent, repeats
// are sent once, no channels is a no-op, and the call is one round trip that
// succeeds or fails as a whole. Unlistening from a channel the session does
// not listen on is not an error. Notifications pgx has already received on
// those channels stay buffered in conn.
func Unlisten(ctx context.Context, conn *pgx.Conn, channels ...string) error {
	return listenCommand(ctx, conn, "UNLISTEN", channels)
}

// listenCommand sends one command (LISTEN or UNLISTEN) per distinct channel
// in a single simple-protocol query, after validating every name. Validation
// errors come back as they are (they already say "pgnotify: invalid channel
// name"); the server's errors are wrapped with the command.
func listenCommand(ctx context.Context, conn *pgx.Conn, command string, channels []string) error {
	for _, name := range channels {
		if err := ValidateChannel(name); err != nil {
			return err
		}
	}
	if len(channels) == 0 {
		return nil
	}
	if conn == nil {
		return errNilConn
	}
	var sql strings.Builder
	seen := make(map[string]struct{}, len(channels))
	for _, name := range channels {
		if _, dup := seen[name]; dup {
			continue
		}
		seen[name] = struct{}{}
		if sql.Len() > 0 {
			sql.WriteString("; ")
		}
		sql.WriteString(command)
		sql.WriteByte(' ')
		sql.WriteString(quoteIdent(name))
	}
	listen := command == "LISTEN"
	if listen {
		// Which server process ran the LISTENs: behind a pooler it is not
		// the one pgx was given, and the next transaction must find them.
		sql.WriteString("; SELECT pg_backend_pid()")
	}
	// A simple-protocol query with several statements runs in one implicit
	// transaction (unless conn is already in one), which makes the call
	// all-or-nothing in a single round trip.
	results, err := conn.PgConn().Exec(ctx, sql.String()).ReadAll()
	if err != nil {
		if err := asStandby(strings.ToLower(command), err); errors.Is(err, ErrStandby) {
			return err
		}
		return fmt.Errorf("pgnotify: %s: %w", strings.ToLower(command), err)
	}
	if !listen || conn.PgConn().TxStatus() != 'I' {
		// Inside the caller's transaction the LISTENs take effect only
		// when it commits: nothing to check yet.
		return nil
	}
	last := results[len(results)-1]
	if len(last.Rows) != 1 || len(last.Rows[0]) != 1 {
		return errPIDReply
	}
	pid, err := strconv.ParseUint(string(last.Rows[0][0]), 10, 32)
	if err != nil {
		return fmt.Errorf("pgnotify: listen: pg_backend_pid(): %w", err)
	}
	return checkListened(ctx, conn, uint32(pid), slices.Collect(maps.Keys(seen)))
}

// UnlistenAll makes conn's session stop listening on every channel
// (UNLISTEN *), in one round trip. Notifications pgx has already received
// stay buffered in conn.
func UnlistenAll(ctx context.Context, conn *pgx.Conn) error {
	if conn == nil {
		return errNilConn
	}
	if _, err := conn.PgConn().Exec(ctx, "UNLISTEN *").ReadAll(); err != nil {
		return fmt.Errorf("pgnotify: unlisten all: %w", err)
	}
	return nil
}

// ListeningChannels returns the channels conn's session listens on
// (pg_listening_channels()), sorted, in one round trip. A session that
// listens on nothing yields an empty, non-nil slice.
func ListeningChannels(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	if conn == nil {
		return nil, errNilConn
	}
	// The simple protocol returns text, which is the channel name itself,
	// and needs no prepared statement.
	results, err := conn.PgConn().Exec(ctx, "SELECT pg_listening_channels()").ReadAll()
	if err != nil {
		return nil, fmt.Errorf("pgnotify: listening channels: %w", err)
	}
	channels := []string{}
	for _, r := range results {
		for _, row := range r.Rows {
			channels = append(channels, string(row[0]))
		}
	}
	slices.Sort(channels)
	return channels, nil
}

// SQL for Notify. Channels and payloads always travel as bind parameters.
// unnest over several arrays yields their elements side by side in array
// order, and the aggregate consumes the rows in that order, so pg_notify
// runs in the order of msgs.
const (
	notifyOneSQL  = "SELECT pg_notify($1, $2)"
	notifyManySQL = "SELECT count(pg_notify(c, p)) FROM unnest($1::text[], $2::text[]) AS t(c, p)"
)

// Notify sends msgs, in order, with one SQL statement on db. Every channel is
// checked with [ValidateChannel] and every payload's length (at most 7999
// bytes, else an error wrapping [ErrPayloadTooLong]) before anything is sent;
// if any message is invalid, none is sent. No messages means no statement and
// a nil error.
//
// Channels and payloads are always sent as bind parameters, never spliced
// into SQL, so any payload is delivered verbatim; the server itself rejects a
// payload holding a NUL byte or bytes invalid in the database encoding.
// Errors never contain payloads (a server error may quote the offending
// bytes).
//
// One statement is atomic: either every message is queued or, on error,
// none is. PostgreSQL delivers notifications when their transaction commits:
// on a connection or pool, at the end of the statement; on a pgx.Tx, when the
// application commits, and never if it rolls back. Within one transaction the
// server folds exact duplicates (same channel and same payload) into one
// notification; messages differing in either are all delivered, in order.
//
// The statement runs in db's own query exec mode; with pgx's default, it is
// one round trip once pgx has cached the statement on that connection. Notify
// is as safe for concurrent use as db is.
func Notify(ctx context.Context, db Execer, msgs ...Message) error {
	for _, m := range msgs {
		if err := ValidateChannel(m.Channel); err != nil {
			return err
		}
		if len(m.Payload) > maxPayloadLen {
			return &payloadError{channel: m.Channel, size: len(m.Payload)}
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	if c, ok := db.(*pgx.Conn); db == nil || ok && c == nil {
		return errNilExecer
	}
	var err error
	switch len(msgs) {
	case 1:
		_, err = db.Exec(ctx, notifyOneSQL, msgs[0].Channel, msgs[0].Payload)
	default:
		channels := make([]string, len(msgs))
		payloads := make([]string, len(msgs))
		for i, m := range msgs {
			channels[i], payloads[i] = m.Channel, m.Payload
		}
		_, err = db.Exec(ctx, notifyManySQL, channels, payloads)
	}
	if err != nil {
		return fmt.Errorf("pgnotify: notify %d message(s): %w", len(msgs), err)
	}
	return nil
}
