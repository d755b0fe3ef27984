package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/seed-c59d106d/pgnotify"
)

// closeTimeout bounds closing the connections when listen exits.
const closeTimeout = 10 * time.Second

var listenCommand = &command{
	name:     "listen",
	synopsis: "[-d URL]... [-format json|text] [-n COUNT] [-idle DUR] [-durable -slot NAME [-create-slot] [-lsn pg|decimal]] CHANNEL...",
	summary:  "listen on channels in one or more databases and print one line per notification",
	usage: `
listen LISTENs on every CHANNEL in every database given with -d (repeat it
for several databases, all watched at once), prints a line for each
notification as it arrives, and reconnects by itself when a connection is
lost. Channel names are used exactly as written: "Orders" is not "orders".

Each line names the database it came from by a label, host:port/dbname
(never a password; a repeated -d gets #2, #3, ...), fixed for the life of
the process and across reconnects. JSON lines, one object each:

  {"db":"127.0.0.1:5432/app","channel":"orders","payload":"42","pid":4711,"time":"2026-01-02T15:04:05.123456789Z"}
  {"event":"dead","db":"127.0.0.1:5432/app","time":"...","error":"..."}
  {"event":"recovered","db":"127.0.0.1:5432/app","time":"..."}

Notification lines have no "event" key. time is when pgnotify received it
(RFC 3339, UTC, nanoseconds); pid is the backend that sent it. A payload
that is not valid UTF-8 (a durable payload is bytes; a SQL_ASCII database)
comes as "payload_base64" (standard base64, with padding) instead of
"payload": a line has exactly one of the two, and no byte is replaced. A
dead line means a connection was lost: notifications sent until its
recovered line are lost (that is NOTIFY), so a recovered line is the signal
to resynchronise.

Text lines (-format text) hold the same: time, db, channel, pid=PID and the
payload; each field is quoted Go-style when it is empty, starts with a quote,
has spaces at its ends or holds characters that do not print (a tab, a
newline) or bytes that are not UTF-8 (shown as \xNN), so every line is one
notification, whatever its channel name or payload.

At start every -d must connect and LISTEN, else listen exits 1 naming it;
once all do, listen says so in one line on standard error. It exits 0 after
-n notification lines (from all databases; dead and recovered lines do not
count), and after -idle with no notification (counted from the start and
from each notification) — but with -n too, an -idle that ends it before
COUNT lines exits 3 ("timed out"), so a script can tell "got it" from "gave
up". Ctrl-C (SIGINT) or SIGTERM also exits 0, with a one-line summary on
standard error.

With -durable -slot NAME, listen reads the messages pgnotify emit (package
durable) writes, from the replication slot NAME, instead of NOTIFY: what is
sent while no listener runs waits in the slot. A batch (one transaction's
messages) is acknowledged once printed, whole, so -n ends at the end of the
batch that reaches COUNT; a batch printed just before a crash may be printed
again. JSON lines then carry "lsn", the transaction's commit LSN (the same
when a batch comes again), and pid 0; text lines lsn=LSN instead of pid=.
The LSN is printed as PostgreSQL writes it ("16/B374D848", comparable with
::pg_lsn in SQL); -lsn decimal prints the uint64 that package durable's
Event.LSN holds instead (in Go, fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn))
gives the first form). Ctrl-C, SIGTERM, -idle, -n and an error on another -d
never acknowledge a batch that was not printed: it stays in the slot.
-create-slot creates the slot where it is missing (the server needs
wal_level = logical; the role REPLICATION): with several -d it first checks
every database (reachable, wal_level, the role, room for a slot) and creates
no slot unless it can create all; each slot it creates is named on standard
error. A slot keeps WAL until it is dropped: pgnotify slots lists them,
pgnotify slots -drop NAME drops one. A dead line there loses nothing.

Examples:
  pgnotify listen orders
  pgnotify listen -durable -slot mailer -create-slot invoices   # nothing lost between runs
  pgnotify listen -format text -d postgres://app@db1/app -d postgres://app@db2/app orders Jobs
  pgnotify listen -n 1 -idle 30s deploy_done     # wait for one, at most 30s of silence (else exit 3)
  pgnotify listen orders | jq -r .payload
`,
	flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		o := &listenOptions{}
		fs.Var(&o.urls, "d", "connection string `URL` of a database to listen on; repeat for several\n(default $DATABASE_URL, else the PG* variables)")
		fs.Var(&o.format, "format", "output `FORMAT`: json or text (default json when standard output is\nnot a terminal, else text)")
		fs.IntVar(&o.count, "n", 0, "exit 0 after `COUNT` notification lines (0: no limit)")
		fs.Var((*durationFlag)(&o.idle), "idle", "exit after `DUR` (with a unit: 500ms, 30s, 5m) without a notification\n(0: never): exit 0, or 3 when it ends a -n listen before COUNT lines")
		fs.Var(&o.lsn, "lsn", "with -durable: print lsn in `FORM` pg (PostgreSQL's \"16/B374D848\", as\npg_current_wal_lsn() shows it) or decimal (the number Event.LSN holds)")
		var modes []func(context.Context, *env, []*database, []string) (listenSource, error)
		for _, mode := range listenModes {
			modes = append(modes, mode(fs))
		}
		return func(ctx context.Context, e *env, args []string) error {
			o.channels = args
			return listen(ctx, e, o, modes)
		}
	},
}

// listenOptions are listen's flags and arguments.
type listenOptions struct {
	urls     urlList
	format   formatFlag
	count    int
	idle     time.Duration
	lsn      lsnFlag
	channels []string
}

// durationFlag is a time.Duration flag that says a bare number needs a
// unit: "-idle 5" could mean seconds or nanoseconds.
type durationFlag time.Duration

func (d *durationFlag) String() string { return time.Duration(*d).String() }

func (d *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil && s != "0" {
			return fmt.Errorf("%q needs a unit: %ss, %sms or %sm", s, s, s, s)
		}
		return fmt.Errorf("%q is not a duration: want a number with a unit, e.g. 500ms, 30s, 5m", s)
	}
	*d = durationFlag(v)
	return nil
}

// A listenSource yields the events listen prints, each with the label of
// the database it came from. Only Batch, Dead and Recovered events come
// out of it.
type listenSource interface {
	next(ctx context.Context) (db string, ev pgnotify.Event, err error)
	close(ctx context.Context) error
	// wholeBatches says that -n must not stop within a batch: a durable
	// batch is acknowledged whole when the source closes.
	wholeBatches() bool
}

// listenModes are other ways for listen to receive notifications, each
// chosen by flags of its own (package durable's streams will be one). Each
// defines its flags on listen's FlagSet and returns an opener, which after
// parsing returns the mode's source, or nil if its flags did not choose it.
// Without one, listen uses a Manager.
var listenModes []func(fs *flag.FlagSet) func(ctx context.Context, e *env, dbs []*database, channels []string) (listenSource, error)

func listen(ctx context.Context, e *env, o *listenOptions, modes []func(context.Context, *env, []*database, []string) (listenSource, error)) error {
	if len(o.channels) == 0 {
		return usagef("no CHANNEL: name at least one channel to listen on")
	}
	for _, ch := range o.channels {
		if err := pgnotify.ValidateChannel(ch); err != nil {
			return usagef("%v", err)
		}
	}
	if o.count < 0 {
		return usagef("-n %d: want a count >= 0", o.count)
	}
	if o.idle < 0 {
		return usagef("-idle %v: want a duration >= 0", o.idle)
	}
	dbs, err := databases(e, o.urls)
	if err != nil {
		return err
	}

	// Ctrl-C ends the listening, not the process: listen exits 0 with a
	// summary. A second one kills it, since stop restores the default.
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	var src listenSource
	for _, open := range modes {
		if src, err = open(ctx, e, dbs, o.channels); err != nil || src != nil {
			break
		}
	}
	if err == nil && src == nil {
		src, err = openManager(ctx, dbs, o.channels)
	}
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(e.stderr, "pgnotify listen: interrupted while connecting: 0 notification(s)")
			return nil
		}
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = src.close(cctx)
	}()

	labels := make([]string, len(dbs))
	for i, db := range dbs {
		labels[i] = db.label
	}
	fmt.Fprintf(e.stderr, "pgnotify listen: listening on %s in %s\n", strings.Join(o.channels, ", "), strings.Join(labels, ", "))

	whole := src.wholeBatches()
	format := lineFormatFor(o.format, e.stdoutIsTTY, whole, o.lsn)
	start := time.Now()
	last := start // of the last notification, for -idle
	var notifications, deaths, recoveries int
	var line []byte
	for {
		nctx, cancel := ctx, context.CancelFunc(func() {})
		if o.idle > 0 {
			nctx, cancel = context.WithDeadline(ctx, last.Add(o.idle))
		}
		db, ev, err := src.next(nctx)
		cancel()
		switch {
		case err == nil:
		case ctx.Err() != nil:
			fmt.Fprintf(e.stderr, "pgnotify listen: interrupted after %v: %d notification(s), %d dead, %d recovered\n",
				time.Since(start).Round(time.Millisecond), notifications, deaths, recoveries)
			return nil
		case o.idle > 0 && errors.Is(err, context.DeadlineExceeded):
			if o.count > 0 {
				// A script must tell "got them" from "gave up".
				return &codeError{exitTimeout, fmt.Errorf("timed out: %v without a notification, after %d of %d notification(s)",
					o.idle, notifications, o.count)}
			}
			return nil
		default:
			return err
		}

		now := time.Now()
		line = line[:0]
		done := false
		switch ev.Kind {
		case pgnotify.Batch:
			for _, n := range ev.Notifications {
				line = format.notification(line, db, n, ev.LSN, now)
				notifications++
				if o.count > 0 && notifications >= o.count {
					done = true
					if !whole {
						break
					}
				}
			}
			last = now
		case pgnotify.Dead:
			line = format.dead(line, db, ev.Err, now)
			deaths++
		case pgnotify.Recovered:
			line = format.recovered(line, db, now)
			recoveries++
		}
		if _, err := e.stdout.Write(line); err != nil {
			return fmt.Errorf("write standard output: %w", err)
		}
		if done {
			return nil
		}
	}
}
