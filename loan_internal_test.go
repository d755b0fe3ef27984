package pgnotify

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/seed-c59d106d/pgnotify/internal/fakepg"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// loanSetup starts a fake server and a manager with one member whose loans
// are signalled, and returns the server's side of the member's session.
func loanSetup(t *testing.T, ctx context.Context) (*Manager, *pgx.Conn, *fakepg.Conn) {
	t.Helper()
	srv, err := fakepg.Listen()
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	conn, err := pgx.Connect(ctx, srv.ConnString())
	require.NoError(t, err)
	sess, err := srv.NextConn(ctx)
	require.NoError(t, err)
	m := NewManager(WithHealthCheck(0, 0))
	m.test.loaned = make(testSignal, 1024)
	t.Cleanup(func() { m.Close(context.Background()) })
	require.NoError(t, m.Add(ctx, conn))
	return m, conn, sess
}

// takeN reads batches until n notifications, checking they are numbered
// from first on.
func takeN(t *testing.T, ctx context.Context, m *Manager, first, n int) {
	t.Helper()
	for got := 0; got < n; {
		ev, err := m.Next(ctx)
		require.NoError(t, err)
		require.Equal(t, Batch, ev.Kind)
		for _, x := range ev.Notifications {
			require.Equal(t, fmt.Sprint(first+got), x.Payload)
			got++
		}
	}
}

// The transition reading → lent to the consumer → reading: a burst that
// arrives while the consumer is parked in Next is decoded by the consumer,
// in order and whole, and the waiter reads on afterwards.
func TestLoanDecodesBurstOnTheConsumer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, _, sess := loanSetup(t, ctx)
	const burst = 500
	loaned := false
	for round := 0; !loaned; round++ {
		require.Less(t, round, 200, "no burst was lent to the consumer")
		done := make(chan error, 1)
		go func() { done <- sess.NotifyN("c", burst, func(i int) string { return fmt.Sprint(round*burst + i) }) }()
		takeN(t, ctx, m, round*burst, burst)
		require.NoError(t, <-done)
		select {
		case n := <-m.test.loaned:
			assert.Positive(t, n)
			loaned = true
		default:
		}
	}
	// The member is still live and its waiter reads on.
	require.NoError(t, sess.Notify("c", "after"))
	ev, err := m.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "after", ev.Notifications[0].Payload)
}

// A read error met on the consumer's side of a loan is handed back: the
// waiter closes the connection and the member dies of it, after every
// notification before the error is yielded.
func TestLoanReadErrorIsTheWaitersDeath(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, conn, sess := loanSetup(t, ctx)
	const burst = 300
	go func() {
		sess.NotifyN("c", burst, func(i int) string { return fmt.Sprint(i) })
		sess.SendFatal("57P01", "terminating connection due to administrator command")
	}()
	takeN(t, ctx, m, 0, burst)
	ev, err := m.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, Dead, ev.Kind)
	assert.Equal(t, conn, ev.Conn)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, ev.Err, &pgErr)
	assert.Equal(t, "57P01", pgErr.Code)
	assert.True(t, conn.IsClosed())
	t.Logf("loans: %d", len(m.test.loaned))
}
