package fakepg

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestSplitStatements(t *testing.T) {
	tests := []struct {
		sql  string
		want []string
	}{
		{"", nil},
		{"-- ping", nil},
		{" ; ;; ", nil},
		{`LISTEN "a"; LISTEN "b"`, []string{`LISTEN "a"`, `LISTEN "b"`}},
		{`LISTEN "a;b"; LISTEN "c""d;"`, []string{`LISTEN "a;b"`, `LISTEN "c""d;"`}},
		{`NOTIFY x, 'a;''b'; SELECT 1`, []string{`NOTIFY x, 'a;''b'`, "SELECT 1"}},
		{"SELECT 1 -- one; two\n; SELECT 2", []string{"SELECT 1", "SELECT 2"}},
		{"/* a /* b; */ c; */ SELECT 1", []string{"SELECT 1"}},
		{`LISTEN "open; end`, []string{`LISTEN "open; end`}},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, splitStatements(tt.sql), "%q", tt.sql)
	}
}

func TestParseIdent(t *testing.T) {
	tests := []struct {
		in, name, rest string
		ok             bool
	}{
		{`"Foo"`, "Foo", "", true},
		{`"a""b" x`, `a"b`, " x", true},
		{`Foo_1$ x`, "foo_1$", " x", true},
		{`"ÄÖ"`, "ÄÖ", "", true},
		{`Ünïcode`, "Ünïcode", "", true},
		{`""`, "", "", false},
		{`"open`, "", "", false},
		{`"a""`, "", "", false},
		{`1abc`, "", "", false},
		{`*`, "", "", false},
		{``, "", "", false},
	}
	for _, tt := range tests {
		name, rest, ok := parseIdent(tt.in)
		assert.Equal(t, tt.ok, ok, "%q", tt.in)
		if ok {
			assert.Equal(t, tt.name, name, "%q", tt.in)
			assert.Equal(t, tt.rest, rest, "%q", tt.in)
		}
	}
}

func TestParseNotify(t *testing.T) {
	n, err := parseNotify(`"Ch", 'it''s; ok'`)
	assert.Nil(t, err)
	assert.Equal(t, "Ch", n.Channel)
	assert.Equal(t, "it's; ok", n.Payload)

	n, err = parseNotify(`ch`)
	assert.Nil(t, err)
	assert.Equal(t, "ch", n.Channel)
	assert.Empty(t, n.Payload)

	for _, bad := range []string{``, `ch 'x'`, `ch,`, `ch, x`, `ch, 'open`, `ch, 'a' b`} {
		_, err := parseNotify(bad)
		assert.NotNil(t, err, "%q", bad)
	}
}
