package pgnotify_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
)

// TestZeroManagerFailsClearly: a Manager not made by NewManager returns an
// error from every method that can, and panics in none.
func TestZeroManagerFailsClearly(t *testing.T) {
	ctx := context.Background()
	var m pgnotify.Manager
	errs := map[string]error{
		"Add":         m.Add(ctx, &pgx.Conn{}),
		"Add()":       m.Add(ctx),
		"Remove":      m.Remove(ctx, &pgx.Conn{}),
		"Remove()":    m.Remove(ctx),
		"Do":          m.Do(ctx, &pgx.Conn{}, func(*pgx.Conn) error { return nil }),
		"Listen":      m.Listen(ctx, &pgx.Conn{}, "a"),
		"Unlisten":    m.Unlisten(ctx, &pgx.Conn{}),
		"UnlistenAll": m.UnlistenAll(ctx, &pgx.Conn{}),
		"Recover":     m.Recover(ctx, func(context.Context, pgnotify.Garbage) (*pgx.Conn, error) { return nil, nil }),
		"Close":       m.Close(ctx),
	}
	_, errs["Next"] = m.Next(ctx)
	_, errs["Drain"] = m.Drain(ctx)
	for name, err := range errs {
		if assert.Error(t, err, name) {
			assert.Contains(t, err.Error(), "NewManager", name)
		}
	}
	assert.Empty(t, m.Conns())
	assert.Empty(t, m.Garbage())
	assert.Empty(t, m.TakeGarbage())
	assert.Zero(t, m.Stats().Members)
}

// TestClosedManagerSaysErrClosed: after Close every method returns
// ErrClosed, also when it has nothing to do, and before it looks at its
// arguments: a closed manager is what the caller needs to hear about.
func TestClosedManagerSaysErrClosed(t *testing.T) {
	ctx := context.Background()
	m := pgnotify.NewManager()
	require.NoError(t, m.Close(ctx))
	c := &pgx.Conn{}
	errs := map[string]error{
		"Add":         m.Add(ctx, c),
		"Add()":       m.Add(ctx),
		"Remove":      m.Remove(ctx, c),
		"Remove()":    m.Remove(ctx),
		"Do":          m.Do(ctx, c, func(*pgx.Conn) error { return nil }),
		"Listen":      m.Listen(ctx, c, "a"),
		"Listen()":    m.Listen(ctx, c),
		"Unlisten()":  m.Unlisten(ctx, c),
		"UnlistenAll": m.UnlistenAll(ctx, c),
		"Recover":     m.Recover(ctx, func(context.Context, pgnotify.Garbage) (*pgx.Conn, error) { return nil, nil }),
		// Arguments that would be refused on an open manager.
		"Add(nil)":         m.Add(ctx, nil),
		"Remove(nil)":      m.Remove(ctx, nil),
		"Do(nil, fn)":      m.Do(ctx, nil, func(*pgx.Conn) error { return nil }),
		"Do(c, nil)":       m.Do(ctx, c, nil),
		"Listen(nil)":      m.Listen(ctx, nil, "a"),
		"Listen(bad)":      m.Listen(ctx, c, ""),
		"Unlisten(bad)":    m.Unlisten(ctx, c, "a\x00b"),
		"UnlistenAll(nil)": m.UnlistenAll(ctx, nil),
		"Recover(nil)":     m.Recover(ctx, nil),
	}
	_, errs["Next"] = m.Next(ctx)
	_, errs["Drain"] = m.Drain(ctx)
	for name, err := range errs {
		assert.ErrorIs(t, err, pgnotify.ErrClosed, name)
	}
	assert.NoError(t, m.Close(ctx), "a second Close")
}

// TestHelpersRejectNilConn: the helpers return an error for a nil
// connection instead of panicking.
func TestHelpersRejectNilConn(t *testing.T) {
	ctx := context.Background()
	var nilConn *pgx.Conn
	assert.Error(t, pgnotify.Listen(ctx, nil, "a"))
	assert.Error(t, pgnotify.Unlisten(ctx, nil, "a"))
	assert.Error(t, pgnotify.UnlistenAll(ctx, nil))
	_, err := pgnotify.ListeningChannels(ctx, nil)
	assert.Error(t, err)
	assert.Error(t, pgnotify.Notify(ctx, nil, pgnotify.Message{Channel: "a"}))
	assert.Error(t, pgnotify.Notify(ctx, nilConn, pgnotify.Message{Channel: "a"}), "a typed nil *pgx.Conn")
	m := pgnotify.NewManager()
	defer m.Close(ctx)
	err = m.Add(ctx, nil)
	require.Error(t, err)
	assert.Equal(t, "pgnotify: add: connection 0: nil connection", err.Error())
	assert.Error(t, m.Do(ctx, nil, func(*pgx.Conn) error { return nil }))
	for _, err := range pgnotify.Wait(ctx, nil, 0) {
		assert.Error(t, err)
	}
}

// TestErrorMessagesHaveOnePrefix: errors made of a pgnotify sentinel and a
// pgnotify context say "pgnotify:" once, and still match the sentinel.
func TestErrorMessagesHaveOnePrefix(t *testing.T) {
	ctx := context.Background()
	m := pgnotify.NewManager()
	defer m.Close(ctx)
	c := &pgx.Conn{}
	for _, err := range []error{
		m.Add(ctx, c, c),
		m.Remove(ctx, c),
	} {
		require.Error(t, err)
		assert.Equal(t, 1, strings.Count(err.Error(), "pgnotify:"), err.Error())
		assert.True(t, errors.Is(err, pgnotify.ErrAlreadyAdded) || errors.Is(err, pgnotify.ErrNotManaged), err.Error())
	}
	assert.Equal(t, "pgnotify: add: connection 1: connection already added", m.Add(ctx, c, c).Error())
}
