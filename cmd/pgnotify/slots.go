package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify/durable"
)

func init() { commands = append(commands, slotsCommand) }

var slotsCommand = &command{
	name:     "slots",
	synopsis: "[-d URL] [-format json|text] [-drop NAME]",
	summary:  "list the durable slots (package durable) with the WAL each holds back, or drop one",
	usage: `
slots lists the replication slots listen -durable can read in the database:
logical slots with the pgoutput plugin (pgnotify listen -durable
-create-slot and durable.CreateSlot make them; a logical replication
subscription's slot looks the same). For each: its name, whether a reader
is connected (active), how many bytes of WAL it holds back (from its
restart_lsn to the server's current WAL position: what a forgotten slot
costs in disk), and whether the server invalidated it (it held back more
than max_slot_wal_keep_size: its unread messages are gone; drop it and
create it again).

JSON lines, one per slot:

  {"db":"127.0.0.1:5432/app","slot":"mailer","active":false,"retained_wal_bytes":16777216,"invalidated":false}

-drop NAME drops the slot NAME, releasing its WAL; its unread messages are
gone. A slot a reader holds (active) cannot be dropped: stop the reader
first. The publication pgnotify_durable stays (other slots use it).

Examples:
  pgnotify slots
  pgnotify slots -format json | jq 'select(.retained_wal_bytes > 1e9)'
  pgnotify slots -drop mailer
`,
	flags: func(fs *flag.FlagSet) func(context.Context, *env, []string) error {
		url := singleDatabase(fs)
		var format formatFlag
		fs.Var(&format, "format", "output `FORMAT`: json or text (default json when standard output is\nnot a terminal, else text)")
		drop := fs.String("drop", "", "drop the slot `NAME` instead of listing (its unread messages are gone)")
		return func(ctx context.Context, e *env, args []string) error {
			if len(args) > 0 {
				return usagef("slots takes no arguments, got %q (to drop a slot: -drop NAME)", args[0])
			}
			db, err := oneDatabase(e, *url)
			if err != nil {
				return err
			}
			if *drop != "" {
				if err := checkSlotName(*drop); err != nil {
					return err
				}
				return dropSlot(ctx, e, db, *drop)
			}
			return listSlots(ctx, e, db, format == "json" || (format == "" && !e.stdoutIsTTY))
		}
	},
}

// slotInfo is one line of slots.
type slotInfo struct {
	DB          string `json:"db"`
	Slot        string `json:"slot"`
	Active      bool   `json:"active"`
	RetainedWAL int64  `json:"retained_wal_bytes"`
	Invalidated bool   `json:"invalidated"`
}

func listSlots(ctx context.Context, e *env, db *database, asJSON bool) error {
	conn, err := db.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// An invalidated slot has lost its restart_lsn: it retains nothing.
	rows, err := conn.Query(ctx, `SELECT slot_name, active,
		coalesce((pg_current_wal_lsn() - restart_lsn)::bigint, 0),
		coalesce(wal_status = 'lost', false) OR restart_lsn IS NULL
	FROM pg_replication_slots
	WHERE slot_type = 'logical' AND plugin = 'pgoutput' AND database = current_database()
	ORDER BY slot_name`)
	var slots []slotInfo
	if err == nil {
		slots, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (slotInfo, error) {
			s := slotInfo{DB: db.label}
			return s, row.Scan(&s.Slot, &s.Active, &s.RetainedWAL, &s.Invalidated)
		})
	}
	if err != nil {
		return fmt.Errorf("%s: list slots: %w", db.label, err)
	}
	var out []byte
	for _, s := range slots {
		if asJSON {
			out = appendJSON(out, s)
			continue
		}
		state := "inactive"
		if s.Active {
			state = "active"
		}
		out = appendField(out, s.Slot)
		out = fmt.Appendf(out, "  %s  retains %s (%d bytes) of WAL", state, byteSize(s.RetainedWAL), s.RetainedWAL)
		if s.Invalidated {
			out = append(out, "  INVALIDATED: its messages are gone; drop it and create it again"...)
		}
		out = append(out, '\n')
	}
	if len(slots) == 0 && !asJSON {
		out = fmt.Appendf(out, "%s: no durable slots (logical, pgoutput) in this database\n", db.label)
	}
	_, err = e.stdout.Write(out)
	return err
}

func dropSlot(ctx context.Context, e *env, db *database, slot string) error {
	err := durable.DropSlot(ctx, db.url, slot)
	switch {
	case err == nil:
		fmt.Fprintf(e.stderr, "pgnotify slots: dropped slot %s in %s\n", strconv.Quote(slot), db.label)
		return nil
	case errors.Is(err, durable.ErrSlotInUse):
		return fmt.Errorf("%s: %w: stop its reader first (pgnotify slots shows it active)", db.label, err)
	default:
		return fmt.Errorf("%s: %w", db.label, err)
	}
}
