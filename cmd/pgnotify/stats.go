package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// queueBytesBefore17 is the notification queue's size before PostgreSQL 17,
// where it is fixed: 8 GB in a standard build.
const queueBytesBefore17 = 8 << 30

// defaultMinAge is how long a session must have been in a transaction (or
// blocked writing to its client) before stats names it.
const defaultMinAge = 5 * time.Second

var statsCommand = &command{
	name:     "stats",
	synopsis: "[-d URL] [-format json|text] [-min-age DUR]",
	summary:  "show how full the server's notification queue is, and the sessions that may hold it back",
	usage: `
stats prints pg_notification_queue_usage(): the fraction of the server's
notification queue (8 GB by default; max_notify_queue_pages on PostgreSQL 17
and later) holding notifications that some listening session has not read
yet. The queue is shared by every database of the server.

It is one sample: it says how full the queue is now, not whether it grows.
The fraction counts whole pages (8 kB): 0 means less than a page is
unread. Above 0, listeners are behind at this instant, which is usual on a
busy server; a fraction that grows
from one run to the next means a listening session is not reading. At 100%
every NOTIFY on the server fails until that session reads or goes away.

A session holds the queue back when it listens and does not read: it sits
in a transaction (notifications are delivered only between transactions),
or it is blocked writing to a client that does not read (wait_event
ClientWrite). The server does not say which sessions listen
(pg_listening_channels() answers for its own session only), so stats lists,
from pg_stat_activity on the whole server, every session that has been in a
transaction or blocked on ClientWrite for -min-age or longer: its PID,
application name, database, state and for how long, marked "listens" when
its last statement was a LISTEN (a listener that ran other statements since
is not marked). Seeing other roles' sessions needs pg_read_all_stats (or a
superuser). When the queue is over half full, the server log also names the
PID of the session furthest behind.

JSON: one object, {"db","usage","capacity_bytes","sessions":[{"pid",
"application_name","database","state","wait_event","in_transaction",
"seconds","listens","query"}]}.

Examples:
  pgnotify stats
  pgnotify stats -format json -d postgres://app@db1/app | jq .usage
  pgnotify stats -min-age 0s             # every open transaction, however young
`,
	flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		url := singleDatabase(fs)
		var format formatFlag
		fs.Var(&format, "format", "output `FORMAT`: json or text (default json when standard output is\nnot a terminal, else text)")
		minAge := defaultMinAge
		fs.Var((*durationFlag)(&minAge), "min-age", "name sessions in a transaction (or blocked on ClientWrite) for at least `DUR`")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 0 {
				return usagef("stats takes no arguments, got %q", args[0])
			}
			if minAge < 0 {
				return usagef("-min-age %v: want a duration >= 0", minAge)
			}
			return stats(ctx, e, *url, format, minAge)
		}
	},
}

// holder is a session that may hold the notification queue back.
type holder struct {
	PID             uint32  `json:"pid"`
	ApplicationName string  `json:"application_name"`
	Database        string  `json:"database"`
	State           string  `json:"state"`
	WaitEvent       string  `json:"wait_event"`
	InTransaction   bool    `json:"in_transaction"`
	Seconds         float64 `json:"seconds"` // in its transaction, or in its state when blocked on ClientWrite
	Listens         bool    `json:"listens"` // its last statement was a LISTEN
	Query           string  `json:"query"`   // its last statement, cut to 200 bytes
}

func stats(ctx context.Context, e *env, url string, format formatFlag, minAge time.Duration) error {
	db, err := oneDatabase(e, url)
	if err != nil {
		return err
	}
	conn, err := db.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var usage float64
	var pages *string // NULL before PostgreSQL 17
	var blockSize int64
	err = conn.QueryRow(ctx, `SELECT pg_notification_queue_usage(),
		current_setting('max_notify_queue_pages', true),
		current_setting('block_size')::bigint`).Scan(&usage, &pages, &blockSize)
	if err != nil {
		return fmt.Errorf("%s: %w", db.label, err)
	}
	capacity := int64(queueBytesBefore17)
	if pages != nil {
		if n, err := strconv.ParseInt(*pages, 10, 64); err == nil {
			capacity = n * blockSize
		}
	}
	holders, err := queueHolders(ctx, conn, minAge)
	if err != nil {
		return fmt.Errorf("%s: %w", db.label, err)
	}

	if format == "json" || (format == "" && !e.stdoutIsTTY) {
		if holders == nil {
			holders = []holder{}
		}
		_, err = e.stdout.Write(appendJSON(nil, struct {
			DB            string   `json:"db"`
			Usage         float64  `json:"usage"`
			CapacityBytes int64    `json:"capacity_bytes"`
			Sessions      []holder `json:"sessions"`
		}{db.label, usage, capacity, holders}))
		return err
	}
	var meaning string
	switch {
	case usage == 0:
		meaning = "listeners have read all but at most one page (the fraction counts 8 kB pages)"
	case usage >= 0.5:
		meaning = "DANGER: at 100% every NOTIFY on the server fails; find the listener that is not reading (below, and the server log names its PID)"
	default:
		meaning = "some listener has not read everything yet; one sample cannot tell a stall: run again, a growing fraction means one is not reading"
	}
	out := fmt.Appendf(nil, "%s: notification queue %.4f%% used of %s: %s\n",
		db.label, usage*100, byteSize(capacity), meaning)
	if len(holders) > 0 {
		out = fmt.Appendf(out, "%d session(s) in a transaction or not reading for %v or longer (a listening one holds the queue back):\n", len(holders), minAge)
	}
	for _, h := range holders {
		out = fmt.Appendf(out, "  pid %d  app ", h.PID)
		out = appendField(out, h.ApplicationName)
		out = append(out, "  db "...)
		out = appendField(out, h.Database)
		out = append(out, "  "...)
		out = append(out, h.State...)
		if h.WaitEvent == "ClientWrite" {
			out = append(out, ", blocked writing to its client (not reading)"...)
		}
		out = fmt.Appendf(out, " for %v", (time.Duration(h.Seconds * float64(time.Second))).Round(time.Millisecond))
		if h.Listens {
			out = append(out, "  listens (last statement: "...)
		} else {
			out = append(out, "  last statement: "...)
		}
		out = appendPrintable(out, h.Query)
		if h.Listens {
			out = append(out, ')')
		}
		out = append(out, '\n')
	}
	_, err = e.stdout.Write(out)
	return err
}

// queueHolders returns the sessions of the whole server (the queue is
// shared) that have been in a transaction, or blocked writing to their
// client, for minAge or longer, longest first. pg_stat_activity cannot say
// which sessions listen; a last statement that is a LISTEN is the hint.
func queueHolders(ctx context.Context, conn *pgx.Conn, minAge time.Duration) ([]holder, error) {
	rows, err := conn.Query(ctx, `SELECT pid, coalesce(application_name, ''), coalesce(datname, ''),
		coalesce(state, ''), coalesce(wait_event, ''), xact_start IS NOT NULL,
		extract(epoch FROM now() - coalesce(xact_start, state_change))::float8,
		coalesce(query ~* '^\s*listen\s', false), left(coalesce(query, ''), 200)
	FROM pg_stat_activity
	WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
		AND (xact_start IS NOT NULL OR wait_event = 'ClientWrite')
		AND now() - coalesce(xact_start, state_change) >= $1
	ORDER BY 7 DESC, pid`, minAge)
	if err != nil {
		return nil, fmt.Errorf("read pg_stat_activity: %w", err)
	}
	hs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (holder, error) {
		var h holder
		err := row.Scan(&h.PID, &h.ApplicationName, &h.Database, &h.State, &h.WaitEvent,
			&h.InTransaction, &h.Seconds, &h.Listens, &h.Query)
		return h, err
	})
	if err != nil {
		return nil, fmt.Errorf("read pg_stat_activity: %w", err)
	}
	return hs, nil
}

// byteSize formats n bytes in the largest binary unit that keeps it whole
// enough to read.
func byteSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.3g %cB", float64(n)/float64(div), "KMGTPE"[exp])
}
