package durable

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
)

// encodeMessage builds a pgoutput logical decoding message after its type
// byte, as the server sends it.
func encodeMessage(transactional bool, msgPrefix string, content []byte) []byte {
	b := []byte{0}
	if transactional {
		b[0] = 1
	}
	b = binary.BigEndian.AppendUint64(b, 0x16B3748)
	b = append(b, msgPrefix...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(content)))
	return append(b, content...)
}

// TestParseMessage: the fields pglogrepl's decoder finds, without its
// allocations, and an error instead of a panic for every truncation.
func TestParseMessage(t *testing.T) {
	for _, c := range []struct {
		tx      bool
		prefix  string
		content string
	}{{true, "pgnotify:jobs", "payload"}, {false, "other", ""}, {true, "", "\x00\x01 bytes \x00"}} {
		src := encodeMessage(c.tx, c.prefix, []byte(c.content))
		tx, p, content, err := parseMessage(src)
		if err != nil || tx != c.tx || string(p) != c.prefix || string(content) != c.content {
			t.Errorf("parseMessage(%q) = %v %q %q %v", src, tx, p, content, err)
		}
		var m pglogrepl.LogicalDecodingMessage
		if err := m.Decode(src); err != nil || m.Transactional != tx || m.Prefix != string(p) || string(m.Content) != string(content) {
			t.Errorf("pglogrepl reads %q as %+v, %v", src, m, err)
		}
		for n := range len(src) {
			if _, _, _, err := parseMessage(src[:n]); err == nil {
				t.Errorf("parseMessage of the first %d of %d bytes: no error", n, len(src))
			}
		}
	}
}

// TestTxnTextIsShared: payloads of a transaction share chunks of at most
// textMax bytes, each string keeps its bytes when the source is reused,
// and large payloads get their own.
func TestTxnTextIsShared(t *testing.T) {
	s := &Stream{channels: map[string]string{"c": "c"}}
	tx := &txn{}
	src := make([]byte, 0, 64)
	for i := range 1000 {
		src = append(src[:0], strings.Repeat(string(rune('a'+i%26)), 1+i%50)...)
		ch, ok := s.channelOf([]byte("pgnotify:c"))
		if !ok {
			t.Fatal("channel c not found")
		}
		tx.add(ch, src)
		clear(src[:cap(src)]) // the read buffer is reused for the next message
	}
	big := []byte(strings.Repeat("z", textMax))
	tx.add("c", big)
	big[0] = 'y'
	for i, n := range tx.msgs[:1000] {
		if want := strings.Repeat(string(rune('a'+i%26)), 1+i%50); n.Payload != want || n.Channel != "c" {
			t.Fatalf("message %d: %q on %q, want %q", i, n.Payload, n.Channel, want)
		}
	}
	if p := tx.msgs[1000].Payload; p[0] != 'z' || len(p) != textMax {
		t.Fatalf("large payload changed or cut: %q…", p[:8])
	}
	if want := 25500 + textMax; tx.size != want { // 1000 + 20 × (0 + … + 49), and the large one
		t.Fatalf("size %d, want %d", tx.size, want)
	}
	if _, ok := s.channelOf([]byte("pgnotify:d")); ok {
		t.Error("channel d is not the stream's")
	}
	if _, ok := s.channelOf([]byte("other:c")); ok {
		t.Error("prefix other: is not this package's")
	}
}

// TestTxnAddAllocations: a large transaction costs a few allocations per
// 64 messages, not two per message.
func TestTxnAddAllocations(t *testing.T) {
	payload := []byte("0123456789abcdef0123456789abcdef")
	allocs := testing.AllocsPerRun(10, func() {
		tx := &txn{}
		for range 1024 {
			tx.add("c", payload)
		}
	})
	if per := allocs / 1024; per > 0.2 {
		t.Errorf("%.2f allocations per message", per)
	}
}
