package pgnotify

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// A burst is what a member's waiter has read since it last published, and
// how much more the member's pending set may take: the read side of its
// backpressure. One goroutine has it at a time: the waiter, or the consumer
// a loan lends the read to (loan.go), which hands it back on the loan's
// back channel.
//
//	waiter.next ── publish: ns joins pending ── bound: room and byteRoom
//	     ▲                                              │
//	     │                                              ▼
//	     │                                  waiter.read: add one notification;
//	     │                                  pgx's buffer holds more?
//	     │                                        │ no          │ yes
//	     ├────────────────────────────────────────┘             ▼
//	     │                             read the rest: in the waiter (read), or
//	     │                             lent to a consumer parked in Next
//	     │                             (loan.decode: read, publish, handOver)
//	     └──────────────────────────────────────────────────────┘
type burst struct {
	ns       []*Notification // read, not yet published; reused
	size     int             // sizeOf(ns)
	room     int             // what pending may still take
	byteRoom int             // the bytes pending may still take
	bound    int             // the pending bound: ns never needs more
	next     int             // the size to make ns when it is nil: the last burst's
}

// add appends n, just read.
func (b *burst) add(n *Notification) {
	if b.ns == nil {
		b.ns = make([]*Notification, 0, min(max(b.next, 16), b.bound))
	}
	b.ns = append(b.ns, n)
	b.size += sizeOfOne(n)
}

// hasRoom reports whether pending could take more than the burst holds.
func (b *burst) hasRoom() bool { return len(b.ns) < b.room && b.size < b.byteRoom }

// setRoom records what pending may still take, in notifications and bytes.
func (b *burst) setRoom(room, byteRoom int) { b.room, b.byteRoom = room, byteRoom }

// handOver empties the burst after a publish. A buffer pending took whole
// (see member.appendLocked) is the consumer's now: the next one is made
// like it at the next add, so a steady stream reads without regrowing it.
func (b *burst) handOver(whole bool) {
	if whole {
		b.next = len(b.ns)
		b.ns = nil
	} else if len(b.ns) > 0 {
		clear(b.ns)
		b.ns = b.ns[:0]
	}
	b.size = 0
}

// read takes the notifications already in conn's read buffer, up to room
// in all and until size reaches byteRoom, without a lock or a wake-up per
// notification. The past deadline makes the read that would block, on a
// partial message or on one that is not a notification, fail at once
// instead, so a burst is never held back unpublished. With linger > 0 (a
// loan), while notifications stream in (lingerBytes or more since the
// deadline was last set), the deadline moves linger ahead instead, so that
// the burst goes on across pgx's buffer refills. It returns a read error
// other than the timeout.
//
// It reads through pgconn a few notifications at a time (see chunkOf) and
// then takes them from pgx.Conn's buffer together: taken one by one, each
// costs pgx an allocation to regrow that buffer.
func (b *burst) read(conn *pgx.Conn, linger time.Duration) error {
	pc := conn.PgConn()
	nc := pc.Conn()
	nc.SetReadDeadline(pastDeadline)
	armedAt := 0 // b.size when the linger deadline was last set
	for b.hasRoom() {
		k := chunkOf(b.room-len(b.ns), b.byteRoom-b.size)
		read := 0
		var err error
		for read < k {
			if err = pc.WaitForNotification(context.Background()); err != nil {
				break
			}
			read++
		}
		had := len(b.ns)
		b.ns = popBuffered(conn, b.ns)
		b.size += sizeOf(b.ns[had:])
		if len(b.ns)-had < read {
			// Read, but not put in pgx's buffer: deaf (see waiter.read).
			return errNotHeard
		}
		if err != nil {
			if pgconn.Timeout(err) && !conn.IsClosed() {
				if linger > 0 && b.size-armedAt >= lingerBytes {
					// A stream: the next refill is most likely there.
					armedAt = b.size
					nc.SetReadDeadline(time.Now().Add(linger))
					continue
				}
				return nil
			}
			return err
		}
	}
	return nil
}

// chunkOf returns how many notifications a burst may read before it
// counts them against the bounds: as many as fit in both even if each
// were as large as PostgreSQL allows, so the bounds hold as they would
// one at a time; at least one, at most burstChunk.
func chunkOf(room, byteRoom int) int {
	return max(1, min(burstChunk, room, byteRoom/maxNotificationSize))
}

const (
	// burstChunk bounds a chunk: pgx's buffer grows to it, by doubling.
	burstChunk = 64
	// maxNotificationSize is sizeOfOne of the largest notification
	// PostgreSQL sends: a payload under 8000 bytes, a channel name under
	// NAMEDATALEN (64).
	maxNotificationSize = notificationOverhead + 8000 + 64
)
