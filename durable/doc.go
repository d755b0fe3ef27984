// Package durable carries pgnotify's messages through PostgreSQL's
// write-ahead log, so that a consumer gets every message committed while it
// was down: at-least-once delivery, in commit order, where NOTIFY loses
// whatever is sent while nobody listens.
//
// A producer writes messages inside its own transaction with [Emit]; a
// consumer reads them from a logical replication slot with a [Stream]:
//
//	err := durable.CreateSlot(ctx, url, "billing") // once: the slot keeps messages until confirmed
//	...
//	err = durable.Emit(ctx, tx, pgnotify.Message{Channel: "invoices", Payload: id}) // commits with tx
//	...
//	s, err := durable.Open(ctx, url, "billing", []string{"invoices"})
//	defer s.Close(ctx)
//	for ev, err := range s.Events(ctx) {
//		if err != nil {
//			return err
//		}
//		switch ev.Kind {
//		case pgnotify.Batch: // one transaction's messages; asking for the next acknowledges it
//			handle(ev.LSN, ev.Notifications)
//		case pgnotify.Dead, pgnotify.Recovered: // reconnecting; nothing is lost
//		}
//	}
//
// # How it works
//
// [Emit] calls pg_logical_emit_message(true, 'pgnotify:'+channel, payload):
// the message is written into the WAL as part of the producer's transaction,
// and exists only if that commits. An Emit of several messages packs them
// into as few logical decoding messages as their sizes allow (prefix
// 'pgnotify:' alone, each message framed with its channel), since the server
// pays per logical decoding message; streams read both forms, and streams of
// versions before framing skip frames, so upgrade consumers first. A logical
// replication slot made by [CreateSlot] (plugin pgoutput, publication
// [Publication]) keeps every WAL record from the position its consumer last
// confirmed. [Open] streams the
// slot with pgoutput's messages option (PostgreSQL 14 and later), through
// github.com/jackc/pglogrepl, and yields each committed transaction's messages
// on the stream's channels as one [pgnotify.Batch] event, with the
// transaction's commit LSN in Event.LSN.
//
// # Acknowledgement and duplicates
//
// A batch is acknowledged when the consumer calls [Stream.Next] again, or
// [Stream.Close]; never earlier. The stream sends acknowledgements to the
// server within about 20 ms, several together, and at Close; the status
// interval ([WithStatusInterval]) only paces keepalives. What a crash of the
// consumer process brings back on the next stream is therefore at most the
// batch it held, and the one before it if it died within those 20 ms of
// asking for the next: never handled work from seconds earlier.
//
// A consumer that handles batches in parallel opens the stream with
// [WithManualAck] and acknowledges each with [Stream.Ack], in any order. The
// slot keeps one position: it advances to the end of the longest run of
// acknowledged batches from the oldest handed out, and a crash brings back
// every batch after it, acknowledged or not. Next is the consumer's alone: a
// second goroutine in it gets an error.
//
// A server crash or restart can bring back more: the server keeps confirmed
// positions in memory and saves them at checkpoints, so after a crash (or
// pg_ctl stop -m immediate) every batch acknowledged since the last
// checkpoint may come again, and until PostgreSQL 17 a clean shutdown saves
// them only if the stream was closed first (Close marks the slot's position
// for saving). Measured on PostgreSQL 15 by TestServerRestart: after Close and
// a fast restart, no batch came again; after an immediate restart, every batch
// acknowledged since the last checkpoint did (21 of 21 in that test). Within
// one stream a batch is never delivered twice, whatever the server resends.
// Make the handling idempotent, keyed by Event.LSN (one value per
// transaction, the same on every delivery, increasing in commit order).
//
// # Server shutdown, slowness, failures
//
// A stream never holds up a server shutdown: it reports what it received as
// written, and a flush position only when an acknowledgement advances it, so a
// stopping walsender need not wait for the consumer to finish a batch; and
// when a stalled consumer has let its read-ahead fill (16 MiB or 4,096
// batches), so that it no longer reads what the walsender must send before
// it can stop, the stream checks about once a second, with a short ordinary
// connection, whether the server refuses connections because it is shutting
// down, and then lets go of its connection (Dead, then Recovered after the
// restart). It
// answers the server's keepalives from its own goroutine, whatever the
// consumer is doing, so the server never drops a slow consumer
// (wal_sender_timeout); when the consumer falls behind, the stream stops
// reading after a bounded read-ahead and TCP holds the server back. On a lost
// connection it yields [pgnotify.Dead] (Err says why), reconnects with jittered
// backoff ([WithReconnect]) and yields [pgnotify.Recovered]; nothing is lost,
// and it resumes after the last acknowledged batch. A slot that disappears or
// is invalidated meanwhile, or a dropped publication, ends the stream with
// [ErrSlotMissing], [ErrSlotInvalidated] or [ErrPublicationMissing].
// [Stream.Stats] reports batches, messages, reconnects, the acknowledged
// position and the lag behind the server's WAL.
//
// # A slot holds WAL until it is read
//
// A slot keeps every WAL segment from the oldest position it still needs,
// read or not, until [DropSlot]. A consumer that stops for good, or a slot
// created and forgotten, fills the server's disk. Watch [RetainedWAL], drop
// slots you no longer read, and consider max_slot_wal_keep_size: past it the
// server invalidates the slot instead of filling the disk, and its unread
// messages are lost ([ErrSlotInvalidated]).
//
// # Durable or NOTIFY?
//
// Choose durable when a message must not be lost while the consumer is down,
// restarting or slow, when payloads exceed NOTIFY's 8000 bytes (up to
// [MaxPayloadLen]), or when one consumer process must resume where it left off.
// Choose NOTIFY (package pgnotify) for wake-up signals and fan-out to many
// listeners, where a lost message is harmless or recovered from tables.
//
// The costs: every message is WAL (written, flushed, archived, replicated);
// each slot costs a walsender process while read and pins WAL while not; each
// stream has one consumer (a second gets [ErrSlotInUse]), so fan-out means one
// slot per consumer, and each slot decodes the whole WAL stream, including
// other tables' changes. Latency with one message in flight is close to
// NOTIFY's; the walsender, not this package, bounds throughput.
//
// Requirements: wal_level = logical ([ErrWalLevel] from Open, CreateSlot and
// Emit; changing it needs a restart), free max_replication_slots and max_wal_senders, a role with
// REPLICATION ([ErrNoReplication]), and CREATE on the database for the first
// CreateSlot (for the publication). Connect directly or through a proxy in
// session mode: replication connections cannot be pooled per transaction. On
// managed services logical decoding is usually a setting: on Amazon RDS and
// Aurora the parameter rds.logical_replication = 1 (a reboot) and the
// rds_replication role; on Google Cloud SQL the flag cloudsql.logical_decoding
// = on and a user WITH REPLICATION; on Azure Database for PostgreSQL the
// server parameter wal_level = logical. Before PostgreSQL 17 logical slots do
// not move to a promoted standby: after a failover the slot is missing
// ([ErrSlotMissing]) and the messages it held are not on the new primary's
// slot; recreate it and resynchronise from your tables.
package durable
