package pgnotifytest

import (
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
)

// Issue 16 item 12: the README's first loop, without WithReconnect, does not
// return nil when its only connection dies: after the Dead event, Events
// yields ErrNoConns, which still matches io.EOF.
func TestEventsLoopWithoutReconnectReportsNoConns(t *testing.T) {
	ctx := testContext(t)
	c := listener(t, "noconns")
	m := newManager(t)
	require.NoError(t, m.Add(ctx, c))
	var dead []error
	loop := func() error {
		for ev, err := range m.Events(ctx) {
			if err != nil {
				return err
			}
			if ev.Kind == pgnotify.Dead {
				dead = append(dead, ev.Err)
			}
		}
		return nil
	}
	adminExec(t, "SELECT pg_terminate_backend($1)", c.PgConn().PID())
	var err error
	within(t, 30*time.Second, "the README's loop", func() { err = loop() })
	require.Len(t, dead, 1, "the Dead event comes first")
	require.Error(t, err, "the loop ended as if all were well")
	assert.ErrorIs(t, err, pgnotify.ErrNoConns)
	assert.ErrorIs(t, err, io.EOF)
	_, err = m.Next(testContext(t))
	assert.Equal(t, io.EOF, err, "Next itself still returns io.EOF")
}
