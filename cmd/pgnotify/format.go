package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/seed-c59d106d/pgnotify"
)

// timeLayout is RFC 3339 in UTC with all nine digits of nanoseconds, so
// that lines sort and align as text.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// lineFormat writes listen's output lines.
type lineFormat interface {
	// notification writes n; lsn is a durable batch's commit LSN, or 0.
	notification(b []byte, db string, n *pgnotify.Notification, lsn uint64, at time.Time) []byte
	dead(b []byte, db string, cause error, at time.Time) []byte
	recovered(b []byte, db string, at time.Time) []byte
}

// formatFlag is -format: json, text, or empty for the default.
type formatFlag string

func (f *formatFlag) String() string { return string(*f) }

func (f *formatFlag) Set(s string) error {
	if s != "json" && s != "text" {
		return fmt.Errorf("want json or text, not %q", s)
	}
	*f = formatFlag(s)
	return nil
}

// lineFormatFor returns the format named by f, or the default: text on a
// terminal, JSON for a script.
// durable says the lines come from listen -durable, where a loss loses
// nothing.
func lineFormatFor(f formatFlag, tty, durable bool) lineFormat {
	if f == "text" || (f == "" && tty) {
		return textFormat{durable: durable}
	}
	return jsonFormat{}
}

// jsonFormat writes one JSON object per line. Notification lines have no
// "event" key; event lines do.
type jsonFormat struct{}

type jsonNotification struct {
	DB      string `json:"db"`
	Channel string `json:"channel"`
	Payload string `json:"payload"`
	PID     uint32 `json:"pid"`
	Time    string `json:"time"`
	LSN     string `json:"lsn,omitempty"` // listen -durable: the batch's commit LSN, as PostgreSQL writes it
}

type jsonEvent struct {
	Event string `json:"event"`
	DB    string `json:"db"`
	Time  string `json:"time"`
	Error string `json:"error,omitempty"`
}

func (jsonFormat) notification(b []byte, db string, n *pgnotify.Notification, lsn uint64, at time.Time) []byte {
	j := jsonNotification{DB: db, Channel: n.Channel, Payload: n.Payload, PID: n.PID, Time: at.UTC().Format(timeLayout)}
	if lsn != 0 {
		j.LSN = lsnString(lsn)
	}
	return appendJSON(b, j)
}

// lsnString writes a WAL position as PostgreSQL does: two hex halves.
func lsnString(lsn uint64) string {
	return fmt.Sprintf("%X/%X", lsn>>32, uint32(lsn))
}

func (jsonFormat) dead(b []byte, db string, cause error, at time.Time) []byte {
	return appendJSON(b, jsonEvent{Event: "dead", DB: db, Time: at.UTC().Format(timeLayout), Error: oneLine(cause)})
}

func (jsonFormat) recovered(b []byte, db string, at time.Time) []byte {
	return appendJSON(b, jsonEvent{Event: "recovered", DB: db, Time: at.UTC().Format(timeLayout)})
}

// appendJSON appends v as one line of JSON. HTML characters stay as they
// are: the lines are for scripts and terminals, not web pages.
func appendJSON(b []byte, v any) []byte {
	buf := bytes.NewBuffer(b)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Strings and numbers always encode; invalid UTF-8 becomes U+FFFD.
		panic(err)
	}
	return buf.Bytes()
}

// textFormat writes lines for people: time, database, channel, PID and the
// payload, with the payload quoted only when it would not read as one line.
type textFormat struct{ durable bool }

func (textFormat) notification(b []byte, db string, n *pgnotify.Notification, lsn uint64, at time.Time) []byte {
	b = at.UTC().AppendFormat(b, timeLayout)
	b = append(b, "  "...)
	b = append(b, db...)
	b = append(b, "  "...)
	b = append(b, n.Channel...)
	if lsn != 0 {
		b = append(b, "  lsn="...)
		b = append(b, lsnString(lsn)...)
	} else {
		b = append(b, "  pid="...)
		b = strconv.AppendUint(b, uint64(n.PID), 10)
	}
	b = append(b, "  "...)
	b = appendPayload(b, n.Payload)
	return append(b, '\n')
}

func (f textFormat) dead(b []byte, db string, cause error, at time.Time) []byte {
	b = at.UTC().AppendFormat(b, timeLayout)
	if f.durable {
		return fmt.Appendf(b, "  %s  DEAD: %s (reconnecting; nothing is lost, a batch may come again)\n", db, oneLine(cause))
	}
	return fmt.Appendf(b, "  %s  DEAD: %s (reconnecting; notifications sent meanwhile are lost)\n", db, oneLine(cause))
}

func (textFormat) recovered(b []byte, db string, at time.Time) []byte {
	b = at.UTC().AppendFormat(b, timeLayout)
	return fmt.Appendf(b, "  %s  RECOVERED: listening again\n", db)
}

// appendPayload appends p as it is when it is printable and has no
// surrounding space, else quoted, so that one notification is one line.
func appendPayload(b []byte, p string) []byte {
	plain := p != "" && strings.TrimSpace(p) == p && !strings.HasPrefix(p, `"`)
	for _, r := range p {
		if !strconv.IsPrint(r) {
			plain = false
			break
		}
	}
	if plain {
		return append(b, p...)
	}
	return strconv.AppendQuote(b, p)
}
