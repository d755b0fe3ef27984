package durable

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// channelOf returns the stream's name of the channel a message prefix
// names, if the prefix is in this package's namespace and the stream reads
// that channel. Looking the bytes up allocates nothing.
func (s *Stream) channelOf(msgPrefix []byte) (string, bool) {
	rest, ok := bytes.CutPrefix(msgPrefix, []byte(prefix))
	if !ok {
		return "", false
	}
	ch, ok := s.channels[string(rest)]
	return ch, ok
}

// parseMessage splits a pgoutput logical decoding message, after its type
// byte: flags (1: transactional), the message's LSN, a NUL-terminated prefix,
// the content's length and the content. The slices point into src.
// pglogrepl's decoder would allocate the prefix and trust the length.
func parseMessage(src []byte) (transactional bool, msgPrefix, content []byte, err error) {
	const head = 1 + 8 // flags, LSN
	if len(src) < head+1+4 {
		return false, nil, nil, fmt.Errorf("durable: logical decoding message of %d bytes is too short", len(src))
	}
	rest := src[head:]
	end := bytes.IndexByte(rest, 0)
	if end < 0 || len(rest)-end-1 < 4 {
		return false, nil, nil, errUnterminated
	}
	msgPrefix, rest = rest[:end], rest[end+1:]
	n := binary.BigEndian.Uint32(rest)
	if rest = rest[4:]; uint64(n) > uint64(len(rest)) {
		return false, nil, nil, fmt.Errorf("durable: logical decoding message content of %d bytes in %d", n, len(rest))
	}
	return src[0] == 1, msgPrefix, rest[:n], nil
}

// unframe adds the messages of a frame (see pack) on the stream's channels
// to t, in order.
func (s *Stream) unframe(t *txn, frame []byte) error {
	if len(frame) == 0 || frame[0] != frameVersion {
		return errFrameVersion
	}
	rest := frame[1:]
	for len(rest) > 0 {
		n := int(rest[0])
		rest = rest[1:]
		if len(rest) < n+4 {
			return errTruncatedFrame
		}
		channel := rest[:n]
		size := binary.BigEndian.Uint32(rest[n:])
		rest = rest[n+4:]
		if uint64(size) > uint64(len(rest)) {
			return errTruncatedFrame
		}
		if ch, ok := s.channels[string(channel)]; ok {
			t.add(ch, rest[:size])
		}
		rest = rest[size:]
	}
	return nil
}
