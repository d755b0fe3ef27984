package durable

import (
	"errors"
	"fmt"

	"github.com/seed-c59d106d/pgnotify"
)

// Sentinel errors. [Open] returns them itself, and a stream whose slot goes
// away while it reconnects ends with one; match them with [errors.Is]. The
// errors returned wrap them with the detail (which slot, the server's
// *pgconn.PgError where there was one).
var (
	// ErrSlotMissing means the replication slot does not exist. Open never
	// creates one: create it once with CreateSlot.
	ErrSlotMissing = errors.New("durable: replication slot does not exist (create it with CreateSlot)")

	// ErrSlotInUse means another stream (or any replication client) is
	// reading the slot. A slot has one reader at a time; the walsender of a
	// consumer that just died may hold it for a moment longer.
	ErrSlotInUse = errors.New("durable: replication slot is in use by another stream")

	// ErrSlotInvalidated means the server invalidated the slot, usually
	// because it held back more WAL than max_slot_wal_keep_size allows. The
	// messages it held are gone: drop it and create it again.
	ErrSlotInvalidated = errors.New("durable: replication slot was invalidated (it held back more WAL than max_slot_wal_keep_size): drop it and create it again")

	// ErrWalLevel means the server's wal_level is not logical.
	ErrWalLevel = errors.New("durable: wal_level must be logical: run ALTER SYSTEM SET wal_level = logical (or set it in postgresql.conf) and restart the server")

	// ErrNoReplication means the role may not start replication: it needs the
	// REPLICATION attribute (ALTER ROLE name REPLICATION) or to be a
	// superuser.
	ErrNoReplication = errors.New("durable: role lacks the REPLICATION attribute (ALTER ROLE name REPLICATION)")
)

// slotError names the slot and keeps the server's error, if any, next to the
// sentinel.
type slotError struct {
	slot     string
	sentinel error
	cause    error // the server's error; may be nil
}

func (e *slotError) Error() string {
	if e.cause == nil {
		return fmt.Sprintf("%v: slot %q", e.sentinel, e.slot)
	}
	return fmt.Sprintf("%v: slot %q: %v", e.sentinel, e.slot, e.cause)
}

func (e *slotError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.sentinel}
	}
	return []error{e.sentinel, e.cause}
}

// payloadError says which message's payload was too long. The payload never
// appears in the error: it may hold private data. It unwraps to
// pgnotify.ErrPayloadTooLong.
type payloadError struct {
	channel string
	size    int
}

func (e *payloadError) Error() string {
	return fmt.Sprintf("durable: payload for channel %q is %d bytes; the limit is %d",
		e.channel, e.size, MaxPayloadLen)
}

func (e *payloadError) Unwrap() error { return pgnotify.ErrPayloadTooLong }

// permanent reports whether err needs an administrator: retrying cannot help,
// so a reconnecting stream ends with it.
func permanent(err error) bool {
	return errors.Is(err, ErrSlotMissing) || errors.Is(err, ErrSlotInvalidated) ||
		errors.Is(err, ErrWalLevel) || errors.Is(err, ErrNoReplication)
}
