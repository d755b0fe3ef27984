package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/seed-c59d106d/pgnotify"
)

// maxPayload is the longest payload NOTIFY accepts: the server rejects
// 8000 bytes or more, and so does pgnotify.Notify. Checking it here, for
// every line before the first is sent, is what makes one bad line send
// nothing.
const maxPayload = 7999

// notifyChunk is how many messages go in one statement; a long input is
// several statements in one transaction.
const notifyChunk = 1000

var notifyCommand = &command{
	name:     "notify",
	synopsis: "[-d URL] CHANNEL [PAYLOAD]",
	summary:  "send a notification, or one per line of standard input",
	usage: `
notify sends PAYLOAD on CHANNEL (an empty payload if PAYLOAD is ""). With no
PAYLOAD, every line of standard input is one payload, without its newline
(or "\r\n"; a last line without one counts too): all lines are checked
before anything is sent, then sent in one transaction, in order, so
listeners get all of them or none. One bad line sends nothing (exit 2);
empty input sends nothing. If the connection breaks after COMMIT was sent,
notify cannot know whether the server committed: it says so and exits 4
(never "nothing sent"); look before sending again.

Channel names are used exactly as written ("Orders" is not "orders"): at
most 63 bytes of UTF-8, no NUL. A payload is at most 7999 bytes of UTF-8,
without a NUL byte. Within one transaction PostgreSQL delivers identical payloads on
one channel once: make lines distinct if each must arrive. Put -- before a
channel or payload that begins with "-".

Examples:
  pgnotify notify orders 42
  pgnotify notify -d postgres://app@db1/app Jobs '{"id": 7}'
  printf 'a\nb\nc\n' | pgnotify notify letters     # three notifications, one transaction
`,
	flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		url := singleDatabase(fs)
		return func(ctx context.Context, e *env, args []string) error {
			return send(ctx, e, *url, args, notifySender)
		}
	},
}

// A sender is what notify and emit differ in: how messages are sent in a
// transaction, and what a payload may be.
type sender struct {
	verb       string // for messages: "notify"
	maxPayload int
	bytes      bool // a payload may hold any bytes (emit), not only text
	send       func(ctx context.Context, tx pgx.Tx, msgs []pgnotify.Message) error
}

// notifySender sends with NOTIFY.
var notifySender = sender{
	verb:       "notify",
	maxPayload: maxPayload,
	send: func(ctx context.Context, tx pgx.Tx, msgs []pgnotify.Message) error {
		return pgnotify.Notify(ctx, tx, msgs...)
	},
}

// send sends one payload from args, or one per line of standard input, in
// one transaction, after checking them all.
func send(ctx context.Context, e *env, url string, args []string, how sender) error {
	var msgs []pgnotify.Message
	switch len(args) {
	case 0:
		return usagef("no CHANNEL: name the channel to %s", how.verb)
	case 1, 2:
		if err := pgnotify.ValidateChannel(args[0]); err != nil {
			return usagef("%v", err)
		}
		if len(args) == 2 {
			if err := how.checkPayload(args[1]); err != nil {
				return usagef("payload %v", err)
			}
			msgs = []pgnotify.Message{{Channel: args[0], Payload: args[1]}}
			break
		}
		var err error
		if msgs, err = readPayloads(e.stdin, args[0], how); err != nil {
			return err
		}
	default:
		return usagef("%d arguments: want CHANNEL [PAYLOAD] (quote a payload holding spaces)", len(args))
	}
	db, err := oneDatabase(e, url)
	if err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}

	conn, err := db.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("%s: nothing sent: %w", db.label, err)
	}
	for len(msgs) > 0 {
		n := min(len(msgs), notifyChunk)
		if err := how.send(ctx, tx, msgs[:n]); err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			if errors.Is(err, pgnotify.ErrInvalidChannel) || errors.Is(err, pgnotify.ErrPayloadTooLong) {
				// Checked above; kept in case the library's rules grow stricter.
				return usagef("%v", err)
			}
			return fmt.Errorf("%s: nothing sent: %w", db.label, err)
		}
		msgs = msgs[n:]
	}
	return commit(ctx, db.label, tx, how.verb)
}

// commit commits tx and tells apart the three outcomes a script must not
// confuse: committed (nil), not committed (the server said so, or the
// connection was already gone: "nothing sent"), and unknown (the connection
// broke once COMMIT may have left: the server may have committed; exit 4).
//
// Whether COMMIT left cannot be read from the error: once a read fails,
// pgconn closes the connection and reports "conn closed", an error that
// claims nothing was sent (SafeToRetry). So every failure that is not the
// server's own answer counts as unknown, unless the connection was closed
// before COMMIT was attempted.
func commit(ctx context.Context, label string, tx pgx.Tx, verb string) error {
	if tx.Conn().IsClosed() {
		return fmt.Errorf("%s: nothing sent: the connection was lost before COMMIT", label)
	}
	err := tx.Commit(ctx)
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pgx.ErrTxCommitRollback), errors.As(err, &pgErr):
		// The server answered: it rolled back (e.g. a full notification
		// queue).
		return fmt.Errorf("%s: nothing sent: %w", label, err)
	default:
		return &codeError{exitUnknown, fmt.Errorf("%s: the connection broke after COMMIT was sent: "+
			"the server may or may not have committed, so the payloads may or may not have been delivered; "+
			"check before you %s again (%w)", label, verb, err)}
	}
}

// readPayloads reads every line of r as a payload for channel, checking
// each; the error names the first bad line.
func readPayloads(r io.Reader, channel string, how sender) ([]pgnotify.Message, error) {
	var msgs []pgnotify.Message
	br := bufio.NewReader(r)
	for lineNo := 1; ; lineNo++ {
		line, err := br.ReadString('\n')
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("read standard input: %w", err)
		}
		if line == "" && err == io.EOF {
			return msgs, nil
		}
		// A line ends at "\n" or "\r\n": a file from Windows must not
		// deliver "b\r".
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if perr := how.checkPayload(line); perr != nil {
			return nil, usagef("standard input line %d: payload %v; nothing sent", lineNo, perr)
		}
		msgs = append(msgs, pgnotify.Message{Channel: channel, Payload: line})
		if err == io.EOF {
			return msgs, nil
		}
	}
}

// checkPayload rejects what the server would: too long, or, for NOTIFY,
// what text cannot hold (a NUL byte, bytes that are not UTF-8).
func (how sender) checkPayload(p string) error {
	if len(p) > how.maxPayload {
		return fmt.Errorf("is %d bytes; the limit is %d", len(p), how.maxPayload)
	}
	if how.bytes {
		return nil
	}
	if strings.IndexByte(p, 0) >= 0 {
		return errors.New("holds a NUL byte")
	}
	if !utf8.ValidString(p) {
		return errors.New("is not valid UTF-8 (a NOTIFY payload is text; pgnotify emit takes any bytes)")
	}
	return nil
}
