package pgnotify

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestQuoteIdent(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"foo", `"foo"`},
		{"Foo", `"Foo"`},
		{"with space", `"with space"`},
		{`quo"te`, `"quo""te"`},
		{`""`, `""""""`},
		{`x"; DROP TABLE t; --`, `"x""; DROP TABLE t; --"`},
		{"ünïcödé", `"ünïcödé"`},
	} {
		assert.Equal(t, tc.want, quoteIdent(tc.in), "quoteIdent(%q)", tc.in)
	}
}

func TestLimits(t *testing.T) {
	// NAMEDATALEN-1 and the server's payload limit (8000 bytes is rejected).
	assert.Equal(t, 63, maxChannelLen)
	assert.Equal(t, 7999, maxPayloadLen)
}

func TestChannelErrorTruncatesName(t *testing.T) {
	err := ValidateChannel(strings.Repeat("n", 500))
	assert.Less(t, len(err.Error()), 200, "a long rejected name is shortened in the message")
}
