package pgnotify_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
)

func TestValidateChannel(t *testing.T) {
	valid := []string{
		"foo",
		"Foo",
		"with space",
		`quo"te`,
		"select",
		"ünïcödé",
		`x"; DROP TABLE t; --`,
		strings.Repeat("a", 63),
		strings.Repeat("é", 31) + "a", // 63 bytes, 32 runes
	}
	for _, name := range valid {
		assert.NoError(t, pgnotify.ValidateChannel(name), "ValidateChannel(%q)", name)
	}

	invalid := []string{
		"",
		strings.Repeat("a", 64),
		strings.Repeat("é", 32), // 64 bytes
		"a\x00b",
		"\x00",
		"\xff",
		"ok\xc3", // truncated UTF-8 sequence
	}
	for _, name := range invalid {
		err := pgnotify.ValidateChannel(name)
		require.Error(t, err, "ValidateChannel(%q)", name)
		assert.ErrorIs(t, err, pgnotify.ErrInvalidChannel, "ValidateChannel(%q)", name)
		assert.NotErrorIs(t, err, pgnotify.ErrPayloadTooLong)
		assert.True(t, strings.HasPrefix(err.Error(), "pgnotify: "), "error %q", err)
	}
}

// fakeExecer records every Exec call instead of talking to a server.
type fakeExecer struct {
	calls []execCall
	err   error
}

type execCall struct {
	sql  string
	args []any
}

func (f *fakeExecer) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	f.calls = append(f.calls, execCall{sql: sql, args: args})
	return pgconn.NewCommandTag("SELECT 1"), f.err
}

func TestNotifyNoMessages(t *testing.T) {
	db := &fakeExecer{}
	require.NoError(t, pgnotify.Notify(context.Background(), db))
	assert.Empty(t, db.calls)
}

func TestNotifyOneMessageBindsArgs(t *testing.T) {
	db := &fakeExecer{}
	payload := `'); DROP TABLE t; --`
	require.NoError(t, pgnotify.Notify(context.Background(), db,
		pgnotify.Message{Channel: `x"; DROP TABLE t; --`, Payload: payload}))
	require.Len(t, db.calls, 1)
	call := db.calls[0]
	assert.NotContains(t, call.sql, "DROP")
	assert.Contains(t, call.sql, "$1")
	assert.Contains(t, call.sql, "$2")
	assert.Equal(t, []any{`x"; DROP TABLE t; --`, payload}, call.args)
}

func TestNotifyManyMessagesOneStatementInOrder(t *testing.T) {
	db := &fakeExecer{}
	var msgs []pgnotify.Message
	for i := range 1000 {
		msgs = append(msgs, pgnotify.Message{
			Channel: fmt.Sprintf("ch%d", i%7),
			Payload: fmt.Sprintf("secret-payload-%04d", i),
		})
	}
	require.NoError(t, pgnotify.Notify(context.Background(), db, msgs...))
	require.Len(t, db.calls, 1, "one statement for the whole batch")
	call := db.calls[0]
	assert.NotContains(t, call.sql, "secret-payload")
	assert.NotContains(t, call.sql, "ch0")
	require.Len(t, call.args, 2)
	channels, ok := call.args[0].([]string)
	require.True(t, ok, "channels are bound as []string, got %T", call.args[0])
	payloads, ok := call.args[1].([]string)
	require.True(t, ok, "payloads are bound as []string, got %T", call.args[1])
	require.Len(t, channels, len(msgs))
	require.Len(t, payloads, len(msgs))
	for i, m := range msgs {
		assert.Equal(t, m.Channel, channels[i])
		assert.Equal(t, m.Payload, payloads[i])
	}
}

func TestNotifyValidatesBeforeSending(t *testing.T) {
	ok := pgnotify.Message{Channel: "ok", Payload: "fine"}
	for _, tc := range []struct {
		name string
		msgs []pgnotify.Message
		want error
	}{
		{"empty channel", []pgnotify.Message{ok, {Channel: "", Payload: "x"}}, pgnotify.ErrInvalidChannel},
		{"long channel", []pgnotify.Message{ok, {Channel: strings.Repeat("c", 64)}}, pgnotify.ErrInvalidChannel},
		{"NUL in channel", []pgnotify.Message{{Channel: "a\x00b"}, ok}, pgnotify.ErrInvalidChannel},
		{"invalid UTF-8 channel", []pgnotify.Message{ok, ok, {Channel: "\xff"}}, pgnotify.ErrInvalidChannel},
		{"payload 8000 bytes", []pgnotify.Message{ok, {Channel: "ok", Payload: strings.Repeat("p", 8000)}}, pgnotify.ErrPayloadTooLong},
		{"single payload 8000 bytes", []pgnotify.Message{{Channel: "ok", Payload: strings.Repeat("p", 8000)}}, pgnotify.ErrPayloadTooLong},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db := &fakeExecer{}
			err := pgnotify.Notify(context.Background(), db, tc.msgs...)
			require.ErrorIs(t, err, tc.want)
			assert.Empty(t, db.calls, "nothing is sent when any message is invalid")
		})
	}
}

func TestNotifyPayloadLimit(t *testing.T) {
	db := &fakeExecer{}
	require.NoError(t, pgnotify.Notify(context.Background(), db,
		pgnotify.Message{Channel: "c", Payload: strings.Repeat("a", 7999)}))
	assert.Len(t, db.calls, 1, "7999 bytes is allowed")

	secret := "TOPSECRET" + strings.Repeat("s", 8000-len("TOPSECRET"))
	db = &fakeExecer{}
	err := pgnotify.Notify(context.Background(), db, pgnotify.Message{Channel: "c", Payload: secret})
	require.ErrorIs(t, err, pgnotify.ErrPayloadTooLong)
	assert.NotErrorIs(t, err, pgnotify.ErrInvalidChannel)
	assert.NotContains(t, err.Error(), "TOPSECRET", "payloads never appear in errors")
	assert.Contains(t, err.Error(), "8000")
	assert.Contains(t, err.Error(), "7999")
	assert.Empty(t, db.calls)
}

func TestNotifyWrapsExecError(t *testing.T) {
	pgErr := &pgconn.PgError{Code: "22021", Message: "invalid byte sequence"}
	db := &fakeExecer{err: pgErr}
	err := pgnotify.Notify(context.Background(), db, pgnotify.Message{Channel: "c", Payload: "SECRET"})
	require.Error(t, err)
	var got *pgconn.PgError
	require.True(t, errors.As(err, &got))
	assert.Equal(t, "22021", got.Code)
	assert.NotContains(t, err.Error(), "SECRET")
}
