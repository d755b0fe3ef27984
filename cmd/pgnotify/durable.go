package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
)

// The durable parts: emit, and listen -durable. They join the command
// table and listen's modes here, so the rest of the tool does not know
// package durable.
func init() {
	commands = append(commands, emitCommand)
	listenModes = append(listenModes, durableMode)
}

var emitCommand = &command{
	name:     "emit",
	synopsis: "[-d URL] CHANNEL [PAYLOAD]",
	summary:  "send a durable message (package durable), or one per line of standard input",
	usage: `
emit is notify over package durable: it writes PAYLOAD on CHANNEL into the
write-ahead log as a logical decoding message, which a replication slot
keeps until a consumer (pgnotify listen -durable) confirms it, so nothing is
lost while nobody listens. With no PAYLOAD, every line of standard input is
one payload, without its newline ("\n" or "\r\n"; a last line without one
counts too): all lines are checked before anything is sent, then sent in one
transaction, in order; one bad line sends nothing; empty input sends
nothing. Identical payloads are all kept. If the connection breaks after
COMMIT was sent, emit says the outcome is unknown and exits 4.

The server needs wal_level = logical; messages emitted before a slot exists
are in no slot. A payload is at most 64 MiB, and may hold any bytes but the
newline that ends a line of standard input (and a carriage return before
it): give such a payload as the PAYLOAD argument. listen -durable -format
json prints a payload that is not UTF-8 as "payload_base64".

Examples:
  pgnotify emit orders 42
  seq 3 | pgnotify emit jobs                       # three messages, one transaction
`,
	flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		url := singleDatabase(fs)
		return func(ctx context.Context, e *env, args []string) error {
			return send(ctx, e, *url, args, emitSender)
		}
	},
}

// emitSender sends with durable.Emit.
var emitSender = sender{
	verb:       "emit",
	maxPayload: durable.MaxPayloadLen,
	bytes:      true,
	send: func(ctx context.Context, tx pgx.Tx, msgs []pgnotify.Message) error {
		return durable.Emit(ctx, tx, msgs...)
	},
}

// durableMode is listen -durable -slot NAME [-create-slot].
func durableMode(fs *flag.FlagSet) func(context.Context, *env, []*database, []string) (listenSource, error) {
	on := fs.Bool("durable", false, "read durable messages (pgnotify emit) from a replication slot instead of\nNOTIFY: nothing is lost while pgnotify is not running; needs -slot")
	slot := fs.String("slot", "", "with -durable: the replication slot `NAME` to read (one reader at a time)")
	create := fs.Bool("create-slot", false, "with -durable: create the slot (and the publication it needs) where it is\nmissing, once every -d passed the checks; it keeps WAL until dropped:\npgnotify slots -drop NAME")
	return func(ctx context.Context, e *env, dbs []*database, channels []string) (listenSource, error) {
		if !*on {
			if *slot != "" || *create || isSet(fs, "lsn") {
				return nil, usagef("-slot, -create-slot and -lsn need -durable")
			}
			return nil, nil
		}
		if *slot == "" {
			return nil, usagef("-durable needs -slot NAME")
		}
		if err := checkSlotName(*slot); err != nil {
			return nil, err
		}
		return openDurable(ctx, e.stderr, dbs, *slot, *create, channels)
	}
}

// isSet reports whether the flag name was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// durableSource reads one durable stream per database. Stream.Next
// acknowledges the batch it returned before, and Close the one it returned
// last, so Next is called only from listen's own goroutine, once it has
// printed what the previous call returned: a batch that ends up unprinted
// (Ctrl-C, -idle, -n, an error on another -d) was never taken from its
// stream, and stays in the slot.
type durableSource struct {
	streams []*durable.Stream
	labels  []string
	wait    int // the stream next waits on when none has an event ready
}

// pollSlice bounds how long next waits on one stream while others may have
// an event ready. A stream has no way to say "ready" without taking the
// event, so with several -d, next waits on each in turn and looks at the
// others in between: an event on another stream waits at most this long.
const pollSlice = 50 * time.Millisecond

// expired is a context that has ended: Next with it takes an event that is
// ready and never waits.
var expired = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

func openDurable(ctx context.Context, stderr io.Writer, dbs []*database, slot string, create bool, channels []string) (*durableSource, error) {
	s := &durableSource{}
	if create {
		if err := createSlots(ctx, stderr, dbs, slot); err != nil {
			return nil, err
		}
	}
	for _, db := range dbs {
		st, err := durable.Open(ctx, db.url, slot, channels)
		if err != nil {
			s.closeStreams(context.WithoutCancel(ctx))
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(err, durable.ErrSlotMissing) {
				return nil, fmt.Errorf("%s: %w (add -create-slot to create it)", db.label, err)
			}
			return nil, fmt.Errorf("%s: %w", db.label, err)
		}
		s.streams = append(s.streams, st)
		s.labels = append(s.labels, db.label)
	}
	return s, nil
}

func (s *durableSource) wholeBatches() bool { return true }

// next returns the next event of any stream. Once ctx has ended it takes
// nothing more: Next returns what is queued even under an ended context.
func (s *durableSource) next(ctx context.Context) (string, pgnotify.Event, error) {
	for {
		if err := ctx.Err(); err != nil {
			return "", pgnotify.Event{}, err
		}
		if len(s.streams) == 1 {
			return s.take(ctx, 0)
		}
		// One that is ready, starting after the one waited on last, so
		// that a busy stream does not starve the others.
		for k := range s.streams {
			i := (s.wait + k) % len(s.streams)
			db, ev, err := s.take(expired, i)
			if !errors.Is(err, context.Canceled) {
				return db, ev, err // an event, or the stream's own error
			}
			if err := ctx.Err(); err != nil {
				return "", pgnotify.Event{}, err
			}
		}
		wctx, cancel := context.WithTimeout(ctx, pollSlice)
		db, ev, err := s.take(wctx, s.wait)
		cancel()
		s.wait = (s.wait + 1) % len(s.streams)
		if err == nil || wctx.Err() == nil {
			return db, ev, err
		}
	}
}

// take calls stream i's Next under ctx; a stream's own error names its
// database, ctx's is returned as it is.
func (s *durableSource) take(ctx context.Context, i int) (string, pgnotify.Event, error) {
	ev, err := s.streams[i].Next(ctx)
	switch {
	case err == nil:
		return s.labels[i], ev, nil
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return "", ev, err
	default:
		return "", ev, fmt.Errorf("%s: %w", s.labels[i], err)
	}
}

// close acknowledges what listen printed last (Close does: the last event
// taken was printed), and ends every stream.
func (s *durableSource) close(ctx context.Context) error {
	return s.closeStreams(ctx)
}

func (s *durableSource) closeStreams(ctx context.Context) error {
	var errs []error
	for _, st := range s.streams {
		if err := st.Close(ctx); err != nil && !errors.Is(err, pgnotify.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkSlotName rejects a slot name the server would, as a usage error
// (package durable's own check is an ordinary error).
func checkSlotName(slot string) error {
	if slot == "" || len(slot) > 63 || strings.Trim(slot, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
		return usagef("invalid slot name %q: want 1 to 63 lower-case letters, digits and _", slot)
	}
	return nil
}

// slotCheck is what createSlots learns of one database before it creates
// anything.
type slotCheck struct {
	walLevel    string
	replication bool // the role may replicate
	publication bool // the publication exists, or the role may create it
	exists      bool // the slot exists
	usable      bool // ... as a logical pgoutput slot of this database
	invalidated bool
	freeSlot    bool // max_replication_slots leaves room for one more
}

// createSlots is listen -create-slot: it checks every database first
// (reachable, wal_level, the role, room for a slot), creates the slot only
// where it is missing and only once every database passed, names each slot
// it created on stderr, and drops them again if a later creation fails.
func createSlots(ctx context.Context, stderr io.Writer, dbs []*database, slot string) error {
	var missing []*database
	var problems []string
	for _, db := range dbs {
		c, err := checkSlot(ctx, db, slot)
		if err != nil {
			return err // unreachable, or ctx ended: nothing created
		}
		problem := ""
		switch {
		case c.walLevel != "logical":
			problem = fmt.Sprintf("wal_level is %s, not logical (ALTER SYSTEM SET wal_level = logical, then restart)", c.walLevel)
		case !c.replication:
			problem = "the role lacks REPLICATION (ALTER ROLE name REPLICATION)"
		case c.exists && !c.usable:
			problem = fmt.Sprintf("slot %q exists but is not a logical pgoutput slot of this database", slot)
		case c.invalidated:
			problem = fmt.Sprintf("slot %q was invalidated: its messages are gone; drop it (pgnotify slots -drop %s) and create it again", slot, slot)
		case c.exists:
		case !c.publication:
			problem = fmt.Sprintf("publication %s is missing and the role may not create it (GRANT CREATE ON DATABASE)", durable.Publication)
		case !c.freeSlot:
			problem = "no free replication slot (raise max_replication_slots)"
		default:
			missing = append(missing, db)
		}
		if problem != "" {
			problems = append(problems, db.label+": "+problem)
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("-create-slot: created no slot: %s", strings.Join(problems, "; "))
	}
	var created []*database
	for _, db := range missing {
		if err := durable.CreateSlot(ctx, db.url, slot); err != nil {
			err = fmt.Errorf("%s: %w", db.label, err)
			for _, c := range created {
				if derr := durable.DropSlot(context.WithoutCancel(ctx), c.url, slot); derr != nil {
					// Say what is left pinning WAL.
					fmt.Fprintf(stderr, "pgnotify listen: slot %q in %s was created and could not be dropped again: %s; drop it: pgnotify slots -drop %s\n",
						slot, c.label, oneLine(derr), slot)
				}
			}
			return err
		}
		created = append(created, db)
		fmt.Fprintf(stderr, "pgnotify listen: created slot %q in %s; it keeps WAL until dropped (pgnotify slots -drop %s)\n", slot, db.label, slot)
	}
	return nil
}

// checkSlot reads what createSlots checks, in one query on an ordinary
// connection.
func checkSlot(ctx context.Context, db *database, slot string) (slotCheck, error) {
	conn, err := db.connect(ctx)
	if err != nil {
		return slotCheck{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var c slotCheck
	err = conn.QueryRow(ctx, `SELECT current_setting('wal_level'),
		(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),
		EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)
			OR has_database_privilege(current_database(), 'CREATE'),
		s.slot_name IS NOT NULL,
		coalesce(s.slot_type = 'logical' AND s.plugin = 'pgoutput' AND s.database = current_database(), false),
		coalesce(s.wal_status = 'lost', false),
		(SELECT count(*) FROM pg_replication_slots) < current_setting('max_replication_slots')::int
	FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = $2`, durable.Publication, slot).Scan(
		&c.walLevel, &c.replication, &c.publication, &c.exists, &c.usable, &c.invalidated, &c.freeSlot)
	if err != nil {
		return slotCheck{}, fmt.Errorf("%s: check before creating slot %q: %w", db.label, slot, err)
	}
	return c, nil
}
