package pgnotify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
)

func TestCauseClass(t *testing.T) {
	for want, err := range map[string]error{
		"57P01":   fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: "57P01"}),
		"health":  fmt.Errorf("%w: %w", errHealth, errors.New("timeout")),
		"closed":  errClosedInDo,
		"network": io.ErrUnexpectedEOF,
		"other":   errors.New("?"),
	} {
		assert.Equal(t, want, causeClass(err))
	}
}

// TestCauseClassByWhatHappened: one class per kind of failure, whoever met
// it. A cut in a simple-protocol query reaches the member as pgx's
// ErrConnClosed; a stall is a timeout whether a health ping or a drain pass
// met it.
func TestCauseClassByWhatHappened(t *testing.T) {
	stall := &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}
	for name, c := range map[string]struct {
		err  error
		want string
	}{
		"cut in a simple-protocol query": {fmt.Errorf("query: %w", pgconn.ErrConnClosed), "network"},
		"health ping met a reset":        {fmt.Errorf("%w: %w", errHealth, syscall.ECONNRESET), "network"},
		"health ping met a cut":          {fmt.Errorf("%w: %w", errHealth, pgconn.ErrConnClosed), "network"},
		"health ping timed out":          {fmt.Errorf("%w: %w", errHealth, context.DeadlineExceeded), "health"},
		"drain round trip timed out":     {fmt.Errorf("ping: %w", context.DeadlineExceeded), "health"},
		"server FATAL in a health ping":  {fmt.Errorf("%w: %w", errHealth, &pgconn.PgError{Code: "57P01"}), "57P01"},
		"socket error":                   {stall, "network"},
	} {
		assert.Equal(t, c.want, causeClass(c.err), name)
	}
}

func TestCauseClassNotListening(t *testing.T) {
	err := &notListeningError{missing: []string{"a", "b", "c", "d"}, of: 5}
	if got := causeClass(err); got != "not_listening" {
		t.Errorf("causeClass = %q, want not_listening", got)
	}
	if msg := err.Error(); !strings.Contains(msg, `"a", "b", "c" and 1 more`) || !strings.Contains(msg, "4 of its 5") {
		t.Errorf("message does not name what was lost: %s", msg)
	}
}
