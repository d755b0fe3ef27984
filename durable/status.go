package durable

import (
	"encoding/binary"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgproto3"
)

// pgEpoch is PostgreSQL's epoch, which its timestamps count from.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// encodeStatus encodes a standby status update ('r') as a CopyData message:
// write, flush and apply positions, the client's clock, and whether the
// server should reply at once. A zero flush is sent as is (invalid: "nothing
// new flushed"), and apply follows flush.
func encodeStatus(write, flush pglogrepl.LSN, now time.Time, replyRequested bool) []byte {
	data := make([]byte, 0, 34)
	data = append(data, pglogrepl.StandbyStatusUpdateByteID)
	data = binary.BigEndian.AppendUint64(data, uint64(write))
	data = binary.BigEndian.AppendUint64(data, uint64(flush))
	data = binary.BigEndian.AppendUint64(data, uint64(flush))
	data = binary.BigEndian.AppendUint64(data, uint64(now.Sub(pgEpoch).Microseconds()))
	reply := byte(0)
	if replyRequested {
		reply = 1
	}
	data = append(data, reply)
	// Encoding a CopyData fails only for a body over 1 GiB.
	msg, _ := (&pgproto3.CopyData{Data: data}).Encode(nil)
	return msg
}
