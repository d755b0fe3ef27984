package durable

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/seed-c59d106d/pgnotify"
)

// MaxPayloadLen is the largest payload [Emit] accepts, in bytes. The server
// would take up to 1 GiB, but a decoded message must fit, with its framing,
// in one allocation of the walsender (1 GiB): a message near that size makes
// the slot fail at that point every time it is read, for good. 64 MiB leaves
// ample room, and every such message is also held in the consumer's memory.
const MaxPayloadLen = 64 << 20

// MaxEmitLen is the most payload bytes one [Emit] call carries, all its
// messages together. The server takes one statement's parameters in one
// message of at most 1 GiB, and a call near that fails on the wire and
// closes the caller's connection; above MaxEmitLen, Emit fails with an
// error wrapping [pgnotify.ErrPayloadTooLong] before sending anything, and
// the connection stays usable. Emit more in several calls (in one
// transaction if they belong together).
const MaxEmitLen = 256 << 20

// prefix is the namespace of the logical decoding messages this package
// writes: a message's prefix is prefix + its channel, and a frame's (several
// messages in one, see pack) is prefix alone, which no channel can make since
// channels are never empty. Other prefixes (other programs' messages) are
// skipped by every stream.
const prefix = "pgnotify:"

// Framing. The walsender's cost is per logical decoding message, so an Emit
// of several messages packs them into frames: a version byte, then per
// message the channel's length (1 byte: channels have at most 63), the
// channel, the payload's length (4 bytes, big-endian) and the payload.
const (
	frameVersion = 1
	frameEntry   = 1 + 4 // an entry's length bytes
)

// frameMax is the most bytes one frame holds; a message too large to fit
// in one alone is written on its own, unframed. Tests lower it.
var frameMax = MaxPayloadLen

// emitOne and emitMany write transactional logical decoding messages. Many
// go as two arrays in one statement, whatever their number (a SELECT list
// would hit the 1664-column limit); unnest yields the rows in array order and
// the aggregate evaluates its argument row by row, which keeps the order.
//
// Both check wal_level in the same statement: the server writes such
// messages at any wal_level, but below logical no slot can ever read them.
// The WHERE clause references no row, so the plan evaluates it once, as a
// one-time filter, before any message is written; below logical it asks for
// a setting that does not exist, which fails the statement with SQLSTATE
// 42704 and a message that names the problem in the server's log.
const (
	walCheck = ` WHERE current_setting(CASE current_setting('wal_level') WHEN 'logical' THEN 'wal_level'` +
		` ELSE 'pgnotify.wal_level_is_not_logical' END) IS NOT NULL`
	emitOne  = `SELECT pg_logical_emit_message(true, $1::text, $2::bytea)` + walCheck
	emitMany = `SELECT count(pg_logical_emit_message(true, p, c)) FROM unnest($1::text[], $2::bytea[]) AS m(p, c)` + walCheck
)

// Emit writes msgs into the write-ahead log as logical decoding messages, in
// order, in one round trip. Several messages travel together in as few
// logical decoding messages as their sizes allow (the server's cost is per
// such message); a stream decodes them into the same batch, in order. A
// stream of a version of this package from before framing skips such
// messages: upgrade consumers before producers. They are transactional: when db is a transaction
// (pgx.Tx) they commit or roll back with it, and consumers see them only once
// it commits, as one batch; on a connection or pool outside a transaction they
// form a transaction of their own. db is anything that can Exec: *pgx.Conn,
// pgx.Tx, *pgxpool.Pool, *pgxpool.Conn.
//
// Every channel is checked with [pgnotify.ValidateChannel], every payload's
// length against [MaxPayloadLen] and their total against [MaxEmitLen] (errors
// wrapping [pgnotify.ErrPayloadTooLong]) before anything is sent: one bad
// message sends none. Payloads are bytes as far as the server is concerned:
// any content, NUL bytes included, arrives unchanged. Exact duplicates are
// kept. No messages is a no-op. The role needs no special privilege. On a
// server whose wal_level is not logical, where no stream could ever read the
// messages, Emit fails with [ErrWalLevel] and writes nothing; the check is part
// of the same statement, not an extra round trip (as with any failed
// statement, a transaction db is in is then aborted).
func Emit(ctx context.Context, db pgnotify.Execer, msgs ...pgnotify.Message) error {
	total := 0
	for _, m := range msgs {
		if err := pgnotify.ValidateChannel(m.Channel); err != nil {
			return err
		}
		if len(m.Payload) > MaxPayloadLen {
			return &payloadError{channel: m.Channel, size: len(m.Payload)}
		}
		total += len(m.Payload)
	}
	if total > MaxEmitLen {
		return &payloadError{size: total}
	}
	var err error
	switch len(msgs) {
	case 0:
		return nil
	case 1:
		_, err = db.Exec(ctx, emitOne, prefix+msgs[0].Channel, []byte(msgs[0].Payload))
	default:
		prefixes, contents := pack(msgs, total)
		if len(prefixes) == 1 {
			_, err = db.Exec(ctx, emitOne, prefixes[0], contents[0])
		} else {
			_, err = db.Exec(ctx, emitMany, prefixes, contents)
		}
	}
	if err != nil {
		if hasCode(err, codeUndefinedObject) { // only walCheck names an undefined object
			return fmt.Errorf("%w; nothing was emitted: %w", ErrWalLevel, err)
		}
		return fmt.Errorf("durable: emit %d message(s): %w", len(msgs), err)
	}
	return nil
}

// pack turns msgs (whose payloads total total bytes) into logical decoding
// messages, in order: as few frames as frameMax allows, and a message too
// large for a frame of its own as an unframed message.
func pack(msgs []pgnotify.Message, total int) (prefixes []string, contents [][]byte) {
	var frame []byte
	left := total // what is still to frame, for a frame's capacity
	for _, m := range msgs {
		left += frameEntry + len(m.Channel)
	}
	flush := func() {
		if frame != nil {
			prefixes = append(prefixes, prefix)
			contents = append(contents, frame)
			frame = nil
		}
	}
	for _, m := range msgs {
		size := frameEntry + len(m.Channel) + len(m.Payload)
		left -= size
		if 1+size > frameMax {
			flush()
			prefixes = append(prefixes, prefix+m.Channel)
			contents = append(contents, []byte(m.Payload))
			continue
		}
		if frame != nil && len(frame)+size > frameMax {
			flush()
		}
		if frame == nil {
			frame = make([]byte, 1, min(frameMax, 1+size+left))
			frame[0] = frameVersion
		}
		frame = append(frame, byte(len(m.Channel)))
		frame = append(frame, m.Channel...)
		frame = binary.BigEndian.AppendUint32(frame, uint32(len(m.Payload)))
		frame = append(frame, m.Payload...)
	}
	flush()
	return prefixes, contents
}
