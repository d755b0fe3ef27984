package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

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
func lineFormatFor(f formatFlag, tty, durable bool, lsn lsnFlag) lineFormat {
	if f == "text" || (f == "" && tty) {
		return textFormat{durable: durable, lsn: lsn}
	}
	return jsonFormat{lsn: lsn}
}

// lsnFlag is -lsn: how a durable batch's commit LSN is printed. PostgreSQL's
// form ("16/B374D848") is the default: pg_current_wal_lsn(),
// pg_replication_slots and pg_waldump print it, and SQL compares it with
// ::pg_lsn. decimal is the uint64 that durable's Event.LSN holds.
type lsnFlag string

func (f *lsnFlag) String() string { return string(*f) }

func (f *lsnFlag) Set(s string) error {
	if s != "pg" && s != "decimal" {
		return fmt.Errorf("want pg or decimal, not %q", s)
	}
	*f = lsnFlag(s)
	return nil
}

// format writes lsn in f's form.
func (f lsnFlag) format(lsn uint64) string {
	if f == "decimal" {
		return strconv.FormatUint(lsn, 10)
	}
	return lsnString(lsn)
}

// jsonFormat writes one JSON object per line. Notification lines have no
// "event" key; event lines do.
type jsonFormat struct{ lsn lsnFlag }

type jsonNotification struct {
	DB      string `json:"db"`
	Channel string `json:"channel"`
	// Payload is the payload when it is valid UTF-8; else PayloadBase64
	// holds its bytes. A line has exactly one of them.
	Payload       *string `json:"payload,omitempty"`
	PayloadBase64 string  `json:"payload_base64,omitempty"`
	PID           uint32  `json:"pid"`
	Time          string  `json:"time"`
	LSN           string  `json:"lsn,omitempty"` // listen -durable: the batch's commit LSN, in -lsn's form
}

type jsonEvent struct {
	Event string `json:"event"`
	DB    string `json:"db"`
	Time  string `json:"time"`
	Error string `json:"error,omitempty"`
}

func (f jsonFormat) notification(b []byte, db string, n *pgnotify.Notification, lsn uint64, at time.Time) []byte {
	j := jsonNotification{DB: db, Channel: n.Channel, Payload: &n.Payload, PID: n.PID, Time: at.UTC().Format(timeLayout)}
	if !utf8.ValidString(n.Payload) {
		// JSON strings hold text: the bytes go in base64 rather than be
		// replaced by U+FFFD (a durable payload is bytes).
		j.Payload, j.PayloadBase64 = nil, base64.StdEncoding.EncodeToString([]byte(n.Payload))
	}
	if lsn != 0 {
		j.LSN = f.lsn.format(lsn)
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
type textFormat struct {
	durable bool
	lsn     lsnFlag
}

func (f textFormat) notification(b []byte, db string, n *pgnotify.Notification, lsn uint64, at time.Time) []byte {
	b = at.UTC().AppendFormat(b, timeLayout)
	b = append(b, "  "...)
	b = appendField(b, db)
	b = append(b, "  "...)
	b = appendField(b, n.Channel)
	if lsn != 0 {
		b = append(b, "  lsn="...)
		b = append(b, f.lsn.format(lsn)...)
	} else {
		b = append(b, "  pid="...)
		b = strconv.AppendUint(b, uint64(n.PID), 10)
	}
	b = append(b, "  "...)
	b = appendField(b, n.Payload)
	return append(b, '\n')
}

func (f textFormat) dead(b []byte, db string, cause error, at time.Time) []byte {
	b = at.UTC().AppendFormat(b, timeLayout)
	b = append(b, "  "...)
	b = appendField(b, db)
	b = append(b, "  DEAD: "...)
	b = appendPrintable(b, oneLine(cause))
	if f.durable {
		return append(b, " (reconnecting; nothing is lost, a batch may come again)\n"...)
	}
	return append(b, " (reconnecting; notifications sent meanwhile are lost)\n"...)
}

func (textFormat) recovered(b []byte, db string, at time.Time) []byte {
	b = at.UTC().AppendFormat(b, timeLayout)
	b = append(b, "  "...)
	b = appendField(b, db)
	return append(b, "  RECOVERED: listening again\n"...)
}

// appendField appends a field of a text line (a payload, a channel name, a
// label) as it is when it is printable UTF-8 and has no surrounding space,
// else quoted Go-style, so that one notification is one line and a field
// reads as one: a channel named "a\nb" cannot split its line.
func appendField(b []byte, p string) []byte {
	if p != "" && strings.TrimSpace(p) == p && !strings.HasPrefix(p, `"`) && printable(p) {
		return append(b, p...)
	}
	return strconv.AppendQuote(b, p)
}

// appendPrintable appends s, a message, as it is when it is printable, else
// quoted Go-style: a server's error text cannot split a line either.
func appendPrintable(b []byte, s string) []byte {
	if printable(s) {
		return append(b, s...)
	}
	return strconv.AppendQuote(b, s)
}

// printable reports whether s is valid UTF-8 with nothing but printable
// characters and spaces.
func printable(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			return false
		}
	}
	return true
}
