package pgnotify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// This file holds the checks that a session can hear: that it is on a
// primary, and that its LISTEN state persists from one transaction to the
// next (it does not behind a transaction-mode pooler).

// sqlStateReadOnly is what LISTEN fails with on a hot standby ("cannot
// execute LISTEN during recovery").
const sqlStateReadOnly = "25006"

// asStandby wraps err as a standbyError of op when the server refused a
// LISTEN because it is a standby; it returns err unchanged otherwise.
func asStandby(op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == sqlStateReadOnly {
		return &standbyError{op: op, err: err}
	}
	return err
}

// sessionSQL reads, in one round trip, what Add needs to know of a
// session: its server process, whether that server is a standby, and the
// channels it listens on.
const sessionSQL = "SELECT pg_backend_pid(), pg_is_in_recovery(); SELECT pg_listening_channels()"

// session is what sessionSQL returned.
type session struct {
	pid      uint32
	standby  bool
	channels []string // sorted
}

// readSession runs sessionSQL on conn.
func readSession(ctx context.Context, conn *pgx.Conn) (session, error) {
	results, err := conn.PgConn().Exec(ctx, sessionSQL).ReadAll()
	if err != nil {
		return session{}, err
	}
	if len(results) != 2 || len(results[0].Rows) != 1 || len(results[0].Rows[0]) != 2 {
		return session{}, errSessionReply
	}
	row := results[0].Rows[0]
	pid, err := strconv.ParseUint(string(row[0]), 10, 32)
	if err != nil {
		return session{}, fmt.Errorf("pgnotify: pg_backend_pid(): %w", err)
	}
	s := session{pid: uint32(pid), standby: string(row[1]) == "t", channels: []string{}}
	for _, r := range results[1].Rows {
		s.channels = append(s.channels, string(r[0]))
	}
	slices.Sort(s.channels)
	return s, nil
}

// pooled reports whether the server process that answered is not the one
// conn was given at connect: a pooler stands between them (PgBouncer and
// its kind hand the client a key of their own). Only then can a session
// move between transactions, so only then do the checks below cost a round
// trip.
func pooled(conn *pgx.Conn, serverPID uint32) bool {
	return serverPID != conn.PgConn().PID()
}

// checkAdd is Add's check of a connection: one round trip on a direct
// connection, two behind a pooler. It returns the channels the session
// listens on, or an error matching ErrStandby (a standby can never hear) or
// ErrNoSession (a listening session that does not persist from one
// transaction to the next).
func checkAdd(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	s, err := readSession(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("pgnotify: listening channels: %w", err)
	}
	if s.standby {
		return nil, &standbyError{}
	}
	if !pooled(conn, s.pid) {
		return s.channels, nil
	}
	again, err := readSession(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("pgnotify: listening channels: %w", err)
	}
	listening := len(s.channels) > 0 || len(again.channels) > 0
	switch {
	case again.standby:
		return nil, &standbyError{}
	case listening && again.pid != s.pid:
		return nil, &noSessionError{detail: fmt.Sprintf(
			"two transactions in a row ran in server processes %d and %d", s.pid, again.pid)}
	case !slices.Equal(s.channels, again.channels):
		return nil, &noSessionError{detail: fmt.Sprintf(
			"two transactions in a row saw %d and %d listening channels", len(s.channels), len(again.channels))}
	}
	return again.channels, nil
}

// checkListened is Listen's check that the LISTENs on channels, committed
// in server process pid, persist into the next transaction. On a direct
// connection it costs nothing; behind a pooler, one round trip.
func checkListened(ctx context.Context, conn *pgx.Conn, pid uint32, channels []string) error {
	if !pooled(conn, pid) {
		return nil
	}
	s, err := readSession(ctx, conn)
	if err != nil {
		return fmt.Errorf("pgnotify: listen: check that the LISTEN persisted: %w", err)
	}
	if s.pid != pid {
		return &noSessionError{op: "listen", detail: fmt.Sprintf(
			"the LISTEN ran in server process %d, the next transaction in %d", pid, s.pid)}
	}
	for _, c := range channels {
		if _, found := slices.BinarySearch(s.channels, c); !found {
			return &noSessionError{op: "listen", detail: fmt.Sprintf(
				"the next transaction does not listen on %q", truncate(c, 80))}
		}
	}
	return nil
}
