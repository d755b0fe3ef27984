package pgnotifytest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
)

func TestListenListeningChannels(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	conn := connect(t)

	got, err := pgnotify.ListeningChannels(ctx, conn)
	require.NoError(t, err)
	assert.NotNil(t, got)
	assert.Empty(t, got)

	require.NoError(t, pgnotify.Listen(ctx, conn))
	require.NoError(t, pgnotify.Unlisten(ctx, conn))

	require.NoError(t, pgnotify.Listen(ctx, conn, "b", "a", "a", "c"), "repeats within one call")
	require.NoError(t, pgnotify.Listen(ctx, conn, "a"), "LISTEN is idempotent")
	got, err = pgnotify.ListeningChannels(ctx, conn)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b", "c"}, got)

	require.NoError(t, pgnotify.Unlisten(ctx, conn, "a", "not-listening"))
	got, err = pgnotify.ListeningChannels(ctx, conn)
	require.NoError(t, err)
	assert.Equal(t, []string{"b", "c"}, got)

	require.NoError(t, pgnotify.UnlistenAll(ctx, conn))
	got, err = pgnotify.ListeningChannels(ctx, conn)
	require.NoError(t, err)
	assert.Empty(t, got)
	require.NoError(t, pgnotify.UnlistenAll(ctx, conn), "UNLISTEN * with nothing to unlisten")
}

func TestListenAllOrNothing(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	conn := connect(t)

	for _, bad := range []string{"", strings.Repeat("x", 64), "a\x00b", "\xff"} {
		err := pgnotify.Listen(ctx, conn, "first", bad, "last")
		require.ErrorIs(t, err, pgnotify.ErrInvalidChannel, "Listen with %q", bad)
	}
	got, err := pgnotify.ListeningChannels(ctx, conn)
	require.NoError(t, err)
	assert.Empty(t, got, "a batch with an invalid name listens on nothing")

	require.NoError(t, pgnotify.Listen(ctx, conn, "first", "last"))
	require.ErrorIs(t, pgnotify.Unlisten(ctx, conn, "first", ""), pgnotify.ErrInvalidChannel)
	got, err = pgnotify.ListeningChannels(ctx, conn)
	require.NoError(t, err)
	assert.Equal(t, []string{"first", "last"}, got, "a batch with an invalid name unlistens nothing")

	// The server runs the batch as one implicit transaction: in a failed
	// transaction every LISTEN fails and none takes effect.
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "SELECT 1/0")
	require.Error(t, err)
	err = pgnotify.Listen(ctx, conn, "in-failed-tx-1", "in-failed-tx-2")
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "got %v", err)
	assert.Equal(t, "25P02", pgErr.Code) // in_failed_sql_transaction
	require.NoError(t, tx.Rollback(ctx))
	got, err = pgnotify.ListeningChannels(ctx, conn)
	require.NoError(t, err)
	assert.Equal(t, []string{"first", "last"}, got)
}

func TestListenInTransactionTakesEffectAtCommit(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	conn := connect(t)

	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, pgnotify.Listen(ctx, conn, "rolled-back"))
	require.NoError(t, tx.Rollback(ctx))
	got, err := pgnotify.ListeningChannels(ctx, conn)
	require.NoError(t, err)
	assert.Empty(t, got)

	tx, err = conn.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, pgnotify.Listen(ctx, conn, "committed"))
	require.NoError(t, tx.Commit(ctx))
	got, err = pgnotify.ListeningChannels(ctx, conn)
	require.NoError(t, err)
	assert.Equal(t, []string{"committed"}, got)
}

func TestNotifyDelivers(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	listener, notifier := connect(t), connect(t)

	require.NoError(t, pgnotify.Listen(ctx, listener, "deliver"))
	require.NoError(t, pgnotify.Notify(ctx, notifier))
	require.NoError(t, pgnotify.Notify(ctx, notifier, pgnotify.Message{Channel: "deliver", Payload: "one"}))
	require.NoError(t, pgnotify.Notify(ctx, notifier, pgnotify.Message{Channel: "deliver"}))
	long := strings.Repeat("é", 3999) + "x" // 7999 bytes, the most the server takes
	require.NoError(t, pgnotify.Notify(ctx, notifier, pgnotify.Message{Channel: "deliver", Payload: long}))

	got := drain(ctx, t, listener)
	require.Len(t, got, 3)
	assert.Equal(t, []pgnotify.Message{
		{Channel: "deliver", Payload: "one"},
		{Channel: "deliver", Payload: ""},
		{Channel: "deliver", Payload: long},
	}, messages(got))
	for _, n := range got {
		assert.Equal(t, notifier.PgConn().PID(), n.PID)
	}
}

func TestNotifyBatchOrder(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	listener, notifier := connect(t), connect(t)

	channels := []string{"order-a", "order-b", "order-c"}
	require.NoError(t, pgnotify.Listen(ctx, listener, channels...))
	msgs := make([]pgnotify.Message, 1000)
	for i := range msgs {
		msgs[i] = pgnotify.Message{Channel: channels[i*7%len(channels)], Payload: fmt.Sprintf("%04d", i)}
	}
	require.NoError(t, pgnotify.Notify(ctx, notifier, msgs...))
	// Twice, so the statement also runs once pgx has cached it.
	require.NoError(t, pgnotify.Notify(ctx, notifier, msgs...))

	got := messages(drain(ctx, t, listener))
	require.Len(t, got, 2*len(msgs))
	assert.Equal(t, msgs, got[:len(msgs)])
	assert.Equal(t, msgs, got[len(msgs):])
}

func TestNotifyFoldsDuplicatesInOneTransaction(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	listener, notifier := connect(t), connect(t)

	require.NoError(t, pgnotify.Listen(ctx, listener, "dup"))
	m := pgnotify.Message{Channel: "dup", Payload: "same"}
	other := pgnotify.Message{Channel: "dup", Payload: "other"}
	require.NoError(t, pgnotify.Notify(ctx, notifier, m, m, other, m))
	assert.Equal(t, []pgnotify.Message{m, other}, messages(drain(ctx, t, listener)))
}

func TestNotifyRidesTransaction(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	listener, notifier := connect(t), connect(t)
	require.NoError(t, pgnotify.Listen(ctx, listener, "tx"))

	// Rolled back: nothing is delivered.
	tx, err := notifier.Begin(ctx)
	require.NoError(t, err)
	require.NoError(t, pgnotify.Notify(ctx, tx,
		pgnotify.Message{Channel: "tx", Payload: "rolled back 1"},
		pgnotify.Message{Channel: "tx", Payload: "rolled back 2"}))
	require.NoError(t, pgnotify.Notify(ctx, tx, pgnotify.Message{Channel: "tx", Payload: "rolled back 3"}))
	require.NoError(t, tx.Rollback(ctx))
	assert.Empty(t, drain(ctx, t, listener))

	// Committed: delivered at commit, not before.
	tx, err = notifier.Begin(ctx)
	require.NoError(t, err)
	first := pgnotify.Message{Channel: "tx", Payload: "committed 1"}
	second := pgnotify.Message{Channel: "tx", Payload: "committed 2"}
	require.NoError(t, pgnotify.Notify(ctx, tx, first))
	require.NoError(t, pgnotify.Notify(ctx, tx, second))
	assert.Empty(t, drain(ctx, t, listener), "nothing before commit")
	require.NoError(t, tx.Commit(ctx))
	assert.Equal(t, []pgnotify.Message{first, second}, messages(drain(ctx, t, listener)))
}

func TestNotifyBatchAllOrNothing(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	listener, notifier := connect(t), connect(t)
	require.NoError(t, pgnotify.Listen(ctx, listener, "atomic"))

	ok := pgnotify.Message{Channel: "atomic", Payload: "ok"}

	// Rejected before sending.
	for _, bad := range []pgnotify.Message{
		{Channel: "", Payload: "x"},
		{Channel: "atomic", Payload: strings.Repeat("p", 8000)},
	} {
		err := pgnotify.Notify(ctx, notifier, ok, bad, ok)
		require.Error(t, err)
	}

	// Rejected by the server: a payload that is not valid UTF-8 (or holds a
	// NUL byte, which text cannot) fails the one statement, so the valid
	// messages around it are not sent either.
	for _, payload := range []string{"SECRET\xff", "SECRET\x00"} {
		err := pgnotify.Notify(ctx, notifier, ok, pgnotify.Message{Channel: "atomic", Payload: payload}, ok)
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "got %v", err)
		assert.Equal(t, "22021", pgErr.Code) // character_not_in_repertoire
		assert.NotContains(t, err.Error(), "SECRET")
	}

	// The server also rejects a single message on its own.
	err := pgnotify.Notify(ctx, notifier, pgnotify.Message{Channel: "atomic", Payload: "\xff"})
	require.Error(t, err)

	assert.Empty(t, drain(ctx, t, listener), "a failed batch delivers nothing")

	// The notifier is still usable afterwards.
	require.NoError(t, pgnotify.Notify(ctx, notifier, ok))
	assert.Equal(t, []pgnotify.Message{ok}, messages(drain(ctx, t, listener)))
}

// quotedNames are valid channel names that only work when quoted.
var quotedNames = []string{
	"Foo",
	"with space",
	`quo"te`,
	"select",
	"ünïcödé",
	strings.Repeat("n", 63),
	strings.Repeat("é", 31) + "e", // 63 bytes
}

func TestQuotedChannelNames(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	listener, notifier := connect(t), connect(t)

	require.NoError(t, pgnotify.Listen(ctx, listener, quotedNames...))
	got, err := pgnotify.ListeningChannels(ctx, listener)
	require.NoError(t, err)
	assert.ElementsMatch(t, quotedNames, got, "names are kept verbatim")

	var sent []pgnotify.Message
	for _, name := range quotedNames {
		sent = append(sent, pgnotify.Message{Channel: name, Payload: "to " + name})
	}
	require.NoError(t, pgnotify.Notify(ctx, notifier, sent...))
	for _, m := range sent {
		require.NoError(t, pgnotify.Notify(ctx, notifier, m))
	}
	assert.Equal(t, append(sent, sent...), messages(drain(ctx, t, listener)))

	// Names are case-sensitive: Listen("Foo") hears "Foo" and not "foo".
	require.NoError(t, pgnotify.Notify(ctx, notifier,
		pgnotify.Message{Channel: "foo", Payload: "lower"},
		pgnotify.Message{Channel: "FOO", Payload: "upper"},
		pgnotify.Message{Channel: "Foo", Payload: "exact"}))
	assert.Equal(t, []pgnotify.Message{{Channel: "Foo", Payload: "exact"}}, messages(drain(ctx, t, listener)))

	require.NoError(t, pgnotify.Unlisten(ctx, listener, quotedNames...))
	got, err = pgnotify.ListeningChannels(ctx, listener)
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestNotifyListenInjectionIsHarmless(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	listener, notifier := connect(t), connect(t)

	const table = "pgnotify_injection_target"
	adminExec(t, "CREATE TABLE IF NOT EXISTS "+table+" (id int)")
	t.Cleanup(func() { adminExec(t, "DROP TABLE IF EXISTS "+table) })

	names := []string{
		`x"; DROP TABLE ` + table + `; --`,
		`x"; DROP TABLE ` + table + `; LISTEN "y`,
		`'); DROP TABLE ` + table + `; --`,
		`$1`,
		`\`,
	}
	payloads := []string{
		`'); DROP TABLE ` + table + `; --`,
		`"); DROP TABLE ` + table + `; --`,
		`$1 $2 $$ ; DROP TABLE ` + table + `; --`,
		`\'; DROP TABLE ` + table + `; --`,
		`{"a","b"}`, // looks like an array literal
		`NULL`,
	}
	require.NoError(t, pgnotify.Listen(ctx, listener, names...))
	got, err := pgnotify.ListeningChannels(ctx, listener)
	require.NoError(t, err)
	assert.ElementsMatch(t, names, got)

	var sent []pgnotify.Message
	for _, name := range names {
		for _, p := range payloads {
			sent = append(sent, pgnotify.Message{Channel: name, Payload: p})
		}
	}
	require.NoError(t, pgnotify.Notify(ctx, notifier, sent...))
	for _, m := range sent {
		require.NoError(t, pgnotify.Notify(ctx, notifier, m))
	}
	assert.Equal(t, append(sent, sent...), messages(drain(ctx, t, listener)))

	require.NoError(t, pgnotify.Unlisten(ctx, listener, names...))

	var exists bool
	require.NoError(t, notifier.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists))
	assert.True(t, exists, "the table survived")
}
