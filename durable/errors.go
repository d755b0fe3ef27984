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
	// messages it held are gone: drop it and create it again. Open,
	// CreateSlot and RetainedWAL return it for such a slot.
	ErrSlotInvalidated = errors.New("durable: replication slot was invalidated and the messages it held are lost " +
		"(usually it held back more WAL than max_slot_wal_keep_size): drop it with DropSlot and create it again")

	// ErrPublicationMissing means the publication pgoutput reads
	// ([Publication]) was dropped after the slot was created. A slot reads
	// the publication as it was when each message was written, so creating
	// the publication again does not mend the slot: create the publication,
	// then drop the slot and create it again (its unread messages are lost).
	ErrPublicationMissing = errors.New("durable: publication " + Publication + " is missing (it was dropped after the slot was created): " +
		"run CREATE PUBLICATION " + Publication + ", then drop the slot and create it again with CreateSlot")

	// ErrWalLevel means the server's wal_level is not logical.
	ErrWalLevel = errors.New("durable: wal_level must be logical: run ALTER SYSTEM SET wal_level = logical (or set it in postgresql.conf) and restart the server")

	// ErrNoReplication means the role may not start replication: it needs the
	// REPLICATION attribute (ALTER ROLE name REPLICATION) or to be a
	// superuser.
	ErrNoReplication = errors.New("durable: role lacks the REPLICATION attribute (ALTER ROLE name REPLICATION)")
)

// Errors without detail, for conditions a caller does not match on.
var (
	errNoChannels     = errors.New("durable: Open needs at least one channel")
	errConcurrentNext = errors.New("durable: Next called from two goroutines at once: to handle batches in parallel, open the stream WithManualAck and call Ack")
	errAckNeedsManual = errors.New("durable: Ack needs a stream opened WithManualAck (otherwise Next acknowledges)")
	errServerEnded    = errors.New("durable: the server ended replication")
	errEmptyMessage   = errors.New("durable: empty replication message")
	errEmptyPgoutput  = errors.New("durable: empty pgoutput message")
	errStateShape     = errors.New("durable: read server state: unexpected result shape")
	errUnterminated   = errors.New("durable: logical decoding message without a terminated prefix and a length")
	errServerStopping = errors.New("durable: the server is shutting down (it refuses new connections) while this stream, held back by its consumer, had stopped reading: closing the connection so that the server can stop; the stream reconnects")
	errFrameVersion   = errors.New("durable: a framed message of an unknown version (written by a newer version of package durable): upgrade this consumer")
	errTruncatedFrame = errors.New("durable: a framed message is truncated")
	errUnsentAck      = errors.New("durable: closed without a connection: the last acknowledgements did not reach the server, and those batches will come again")
)

// ackError says why Ack refused an LSN.
type ackError struct{ lsn uint64 }

func (e *ackError) Error() string {
	return fmt.Sprintf("durable: Ack(%d): this stream has handed out no such batch (pass the Event.LSN of a Batch it returned)", e.lsn)
}

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

// payloadError says which message's payload was too long, or (channel "")
// that a call's payloads together were. The payload never
// appears in the error: it may hold private data. It unwraps to
// pgnotify.ErrPayloadTooLong.
type payloadError struct {
	channel string
	size    int
}

func (e *payloadError) Error() string {
	if e.channel == "" {
		return fmt.Sprintf("durable: the payloads of one Emit call total %d bytes; the limit is %d (MaxEmitLen): emit them in several calls",
			e.size, MaxEmitLen)
	}
	return fmt.Sprintf("durable: payload for channel %q is %d bytes; the limit is %d (MaxPayloadLen)",
		e.channel, e.size, MaxPayloadLen)
}

func (e *payloadError) Unwrap() error { return pgnotify.ErrPayloadTooLong }

// permanent reports whether err needs an administrator: retrying cannot help,
// so a reconnecting stream ends with it.
func permanent(err error) bool {
	return errors.Is(err, ErrSlotMissing) || errors.Is(err, ErrSlotInvalidated) ||
		errors.Is(err, ErrWalLevel) || errors.Is(err, ErrNoReplication) || errors.Is(err, ErrPublicationMissing)
}
