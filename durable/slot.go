package durable

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Publication is the name of the publication a stream asks pgoutput for.
// pgoutput needs one, and it must exist before the slot is created;
// [CreateSlot] creates it, empty (no tables), if it is missing. One
// publication serves every slot; DropSlot leaves it.
const Publication = "pgnotify_durable"

// SQLSTATE codes the server uses for the conditions this package names.
const (
	codeUndefinedObject       = "42704" // slot does not exist
	codeDuplicateObject       = "42710" // slot or publication already exists
	codeObjectInUse           = "55006" // slot is active for another PID
	codeInsufficientPrivilege = "42501" // no REPLICATION, or no CREATE on the database
)

// replicationConfig parses an ordinary pgx connection string and asks for a
// logical replication connection (replication=database), which also runs SQL
// in its simple protocol.
func replicationConfig(connString string) (*pgconn.Config, error) {
	cc, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("durable: %w", err)
	}
	cfg := cc.Config.Copy()
	cfg.RuntimeParams["replication"] = "database"
	return cfg, nil
}

// connectReplication dials a replication connection. A role that may not
// replicate fails here: the server refuses to start a walsender for it.
func connectReplication(ctx context.Context, cfg *pgconn.Config) (*pgconn.PgConn, error) {
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		if hasCode(err, codeInsufficientPrivilege) {
			return nil, fmt.Errorf("%w: %w", ErrNoReplication, err)
		}
		return nil, fmt.Errorf("durable: connect: %w", err)
	}
	return conn, nil
}

// checkSlotName rejects a name the server would refuse, before anything is
// sent; names are then safe to put in replication commands, which take no
// parameters.
func checkSlotName(slot string) error {
	if slot == "" || len(slot) > 63 {
		return fmt.Errorf("durable: invalid slot name %q: want 1 to 63 characters", slot)
	}
	for _, r := range slot {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return fmt.Errorf("durable: invalid slot name %q: only lower-case letters, digits and _ are allowed", slot)
		}
	}
	return nil
}

// serverState is what Open and CreateSlot check before they act.
type serverState struct {
	walLevel         string
	walSenderTimeout time.Duration // 0: disabled
	publication      bool          // Publication exists

	slotFound  bool
	slotType   string // "logical" or "physical"
	plugin     string
	slotDB, db string // the slot's database and the connection's
	active     bool
	walStatus  string // "lost": invalidated
	confirmed  pglogrepl.LSN
}

// readState runs one query on a replication connection. slot must have
// passed checkSlotName.
func readState(ctx context.Context, conn *pgconn.PgConn, slot string) (serverState, error) {
	sql := `SELECT current_setting('wal_level'),
	(SELECT setting FROM pg_settings WHERE name = 'wal_sender_timeout'),
	EXISTS (SELECT 1 FROM pg_publication WHERE pubname = '` + Publication + `'),
	s.slot_name IS NOT NULL, s.slot_type, s.plugin, s.database, current_database(),
	s.active, s.wal_status, s.confirmed_flush_lsn
FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = '` + slot + `'`
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return serverState{}, fmt.Errorf("durable: read server state: %w", err)
	}
	if len(results) != 1 || len(results[0].Rows) != 1 || len(results[0].Rows[0]) != 11 {
		return serverState{}, errStateShape
	}
	row := results[0].Rows[0]
	st := serverState{
		walLevel:    string(row[0]),
		publication: string(row[2]) == "t",
		slotFound:   string(row[3]) == "t",
		slotType:    string(row[4]),
		plugin:      string(row[5]),
		slotDB:      string(row[6]),
		db:          string(row[7]),
		active:      string(row[8]) == "t",
		walStatus:   string(row[9]),
	}
	if ms, err := strconv.ParseInt(string(row[1]), 10, 64); err == nil && ms > 0 {
		st.walSenderTimeout = time.Duration(ms) * time.Millisecond
	}
	if row[10] != nil {
		if st.confirmed, err = pglogrepl.ParseLSN(string(row[10])); err != nil {
			return serverState{}, fmt.Errorf("durable: read server state: %w", err)
		}
	}
	return st, nil
}

// checkWalLevel fails with ErrWalLevel unless the server decodes logically.
func (st serverState) checkWalLevel() error {
	if st.walLevel != "logical" {
		return fmt.Errorf("%w (it is %s)", ErrWalLevel, st.walLevel)
	}
	return nil
}

// checkStream reports what would keep a stream from reading slot, in the
// order an administrator would fix it.
func (st serverState) checkStream(slot string) error {
	if err := st.checkWalLevel(); err != nil {
		return err
	}
	if !st.slotFound {
		return &slotError{slot: slot, sentinel: ErrSlotMissing}
	}
	if err := st.checkKind(slot); err != nil {
		return err
	}
	if st.walStatus == "lost" {
		return &slotError{slot: slot, sentinel: ErrSlotInvalidated}
	}
	if !st.publication {
		return &slotError{slot: slot, sentinel: ErrPublicationMissing}
	}
	if st.active {
		return &slotError{slot: slot, sentinel: ErrSlotInUse}
	}
	return nil
}

// checkKind rejects an existing slot this package cannot read.
func (st serverState) checkKind(slot string) error {
	if st.slotType != "logical" || st.plugin != "pgoutput" {
		return fmt.Errorf("durable: slot %q is a %s slot with plugin %q; want a logical slot with pgoutput (made by CreateSlot)",
			slot, st.slotType, st.plugin)
	}
	if st.slotDB != st.db {
		return fmt.Errorf("durable: slot %q belongs to database %q, not %q", slot, st.slotDB, st.db)
	}
	return nil
}

// slotConn checks the slot's name, then opens a replication connection for
// a command on it.
func slotConn(ctx context.Context, connString, slot string) (*pgconn.PgConn, error) {
	if err := checkSlotName(slot); err != nil {
		return nil, err
	}
	cfg, err := replicationConfig(connString)
	if err != nil {
		return nil, err
	}
	return connectReplication(ctx, cfg)
}

// CreateSlot creates the logical replication slot that [Open] reads, with the
// pgoutput plugin, and first the publication pgoutput needs ([Publication],
// empty) if it is missing. If the slot already exists as such a slot in this
// database, CreateSlot does nothing: it is safe to call at every deployment;
// but if that slot was invalidated, CreateSlot returns [ErrSlotInvalidated]
// (the messages it held are gone: drop it with [DropSlot] and create it again).
//
// A slot is explicit because it is costly to forget: from its creation until
// [DropSlot], the server keeps every WAL segment the slot has not confirmed,
// whether or not a stream ever reads it. A slot nobody reads fills the disk,
// unless max_slot_wal_keep_size bounds it, and then the server invalidates the
// slot and its unread messages are lost ([ErrSlotInvalidated]). Watch it with
// [RetainedWAL]. Messages emitted before CreateSlot returns are not in the slot.
//
// The role needs REPLICATION ([ErrNoReplication]) and, to create the
// publication, CREATE on the database (the error says so); the server needs
// wal_level = logical ([ErrWalLevel]). Creating a slot waits for the
// transactions running at that moment to end; ctx bounds the wait.
func CreateSlot(ctx context.Context, connString, slot string) error {
	conn, err := slotConn(ctx, connString, slot)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	st, err := readState(ctx, conn, slot)
	if err != nil {
		return err
	}
	if err := st.checkWalLevel(); err != nil {
		return err
	}
	if !st.publication {
		_, err := conn.Exec(ctx, "CREATE PUBLICATION "+Publication).ReadAll()
		switch {
		case hasCode(err, codeInsufficientPrivilege):
			return fmt.Errorf("durable: creating publication %s needs CREATE on the database "+
				"(GRANT CREATE ON DATABASE ... TO this role), or have its owner run CREATE PUBLICATION %s: %w",
				Publication, Publication, err)
		case err != nil && !hasCode(err, codeDuplicateObject): // lost a race: it exists
			return fmt.Errorf("durable: create publication %s: %w", Publication, err)
		}
	}
	if st.slotFound {
		if err := st.checkKind(slot); err != nil {
			return err
		}
		if st.walStatus == "lost" {
			return &slotError{slot: slot, sentinel: ErrSlotInvalidated}
		}
		return nil
	}
	_, err = pglogrepl.CreateReplicationSlot(ctx, conn, slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
	if err != nil {
		return fmt.Errorf("durable: create slot %q: %w", slot, err)
	}
	return nil
}

// DropSlot drops the slot, releasing the WAL it holds back; its unread
// messages are gone. It fails with [ErrSlotInUse] while a stream reads the
// slot (close it first) and with [ErrSlotMissing] if there is no such slot.
// The publication stays: other slots use it.
func DropSlot(ctx context.Context, connString, slot string) error {
	conn, err := slotConn(ctx, connString, slot)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	err = pglogrepl.DropReplicationSlot(ctx, conn, slot, pglogrepl.DropReplicationSlotOptions{})
	if err != nil {
		if typed := slotErr(slot, err); typed != nil {
			return typed
		}
		return fmt.Errorf("durable: drop slot %q: %w", slot, err)
	}
	return nil
}

// RetainedWAL returns how many bytes of WAL the slot holds back: from the
// slot's restart_lsn to the server's current WAL position. This is what a
// forgotten or stalled consumer costs in disk; graph it, and alert well
// before max_slot_wal_keep_size (if set) or the disk runs out. It runs one
// query on an ordinary connection and needs no privilege. It fails with
// [ErrSlotMissing] or [ErrSlotInvalidated] for such a slot.
func RetainedWAL(ctx context.Context, connString, slot string) (int64, error) {
	if err := checkSlotName(slot); err != nil {
		return 0, err
	}
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return 0, fmt.Errorf("durable: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var retained *int64
	var walStatus *string
	err = conn.QueryRow(ctx, `SELECT (pg_current_wal_lsn() - restart_lsn)::bigint, wal_status
		FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&retained, &walStatus)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return 0, &slotError{slot: slot, sentinel: ErrSlotMissing}
	case err != nil:
		return 0, fmt.Errorf("durable: read retained WAL of slot %q: %w", slot, err)
	case retained == nil || walStatus != nil && *walStatus == "lost":
		return 0, &slotError{slot: slot, sentinel: ErrSlotInvalidated}
	}
	return *retained, nil
}

// slotErr returns the typed error for the server's errors about a slot, and
// nil for any other error.
func slotErr(slot string, err error) error {
	switch {
	case hasCode(err, codeUndefinedObject):
		return &slotError{slot: slot, sentinel: ErrSlotMissing, cause: err}
	case hasCode(err, codeObjectInUse):
		return &slotError{slot: slot, sentinel: ErrSlotInUse, cause: err}
	}
	return nil
}

// hasCode reports whether err carries the server's SQLSTATE code.
func hasCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}
