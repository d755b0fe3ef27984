package durable

import (
	"fmt"
	"strings"
	"testing"

	"github.com/seed-c59d106d/pgnotify"
)

// TestPackUnframe: pack puts an Emit's messages in as few frames as
// frameMax allows, a message too large for a frame alone unframed, and
// unframe gives back the stream's channels' messages in order, duplicates
// included.
func TestPackUnframe(t *testing.T) {
	s := &Stream{channels: map[string]string{"a": "a", "b": "b"}}
	big := strings.Repeat("B", 300)
	msgs := []pgnotify.Message{
		{Channel: "a", Payload: "1"}, {Channel: "other", Payload: "skipped"}, {Channel: "b", Payload: ""},
		{Channel: "a", Payload: "1"}, {Channel: "b", Payload: big}, {Channel: "a", Payload: "\x00\xff"},
	}
	for _, tc := range []struct {
		frameMax int
		want     []string // prefixes
	}{
		{MaxPayloadLen, []string{"pgnotify:"}},
		{100, []string{"pgnotify:", "pgnotify:b", "pgnotify:"}},
		{30, []string{"pgnotify:", "pgnotify:", "pgnotify:b", "pgnotify:"}},
	} {
		t.Run(fmt.Sprint(tc.frameMax), func(t *testing.T) {
			defer func(n int) { frameMax = n }(frameMax)
			frameMax = tc.frameMax
			total := 0
			for _, m := range msgs {
				total += len(m.Payload)
			}
			prefixes, contents := pack(msgs, total)
			if fmt.Sprint(prefixes) != fmt.Sprint(tc.want) {
				t.Fatalf("prefixes %q, want %q", prefixes, tc.want)
			}
			txn := &txn{}
			for i, p := range prefixes {
				if p == prefix {
					if len(contents[i]) > frameMax {
						t.Errorf("frame of %d bytes, over %d", len(contents[i]), frameMax)
					}
					if err := s.unframe(txn, contents[i]); err != nil {
						t.Fatal(err)
					}
				} else if ch, ok := s.channelOf([]byte(p)); ok {
					txn.add(ch, contents[i])
				}
			}
			var got []string
			for _, n := range txn.msgs {
				got = append(got, n.Channel+"="+n.Payload)
			}
			want := []string{"a=1", "b=", "a=1", "b=" + big, "a=\x00\xff"}
			if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", want) {
				t.Fatalf("decoded %q, want %q", got, want)
			}
		})
	}
}

// TestUnframeMalformed: a frame cut inside an entry, or of an unknown
// version, is an error, not a panic nor a silent loss. (The server never
// cuts a message: parseMessage checks its length.)
func TestUnframeMalformed(t *testing.T) {
	s := &Stream{channels: map[string]string{"a": "a"}}
	_, contents := pack([]pgnotify.Message{{Channel: "a", Payload: "xyz"}, {Channel: "a", Payload: "w"}}, 4)
	frame := contents[0]
	boundary := 1 + frameEntry + 1 + 3 // after the first entry: a shorter valid frame
	for n := 2; n < len(frame); n++ {
		if n == boundary {
			continue
		}
		if err := s.unframe(&txn{}, frame[:n]); err == nil {
			t.Errorf("frame cut to %d of %d bytes: no error", n, len(frame))
		}
	}
	if err := s.unframe(&txn{}, append([]byte{2}, frame[1:]...)); err == nil {
		t.Error("frame of version 2: no error")
	}
}
