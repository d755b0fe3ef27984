package pgnotify_test

import (
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
)

// TestEventsEmptySetIsErrNoConns: Events over an empty set yields
// ErrNoConns, once, last, unless the caller asked for a drain, whose end is
// quiet; Next returns io.EOF itself in both cases.
func TestEventsEmptySetIsErrNoConns(t *testing.T) {
	ctx := context.Background()
	m := pgnotify.NewManager()
	defer m.Close(ctx)

	_, err := m.Next(ctx)
	assert.Equal(t, io.EOF, err, "Next: a bare io.EOF, as before")

	var errs []error
	for _, err := range m.Events(ctx) {
		errs = append(errs, err)
	}
	require.Len(t, errs, 1, "Events does not end quietly on an empty set")
	assert.ErrorIs(t, errs[0], pgnotify.ErrNoConns)
	assert.ErrorIs(t, errs[0], io.EOF, "existing callers' errors.Is(err, io.EOF) still holds")

	m.SetTimeout(0)
	for ev, err := range m.Events(ctx) {
		t.Fatalf("a drain of an empty set yielded %v, %v", ev, err)
	}
	_, err = m.Next(ctx)
	assert.Equal(t, io.EOF, err, "the end of a drain pass")
}
