package pgnotify

import (
	"context"
	"fmt"
	"strconv"
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

// chunkOf lets readBurst read ahead only as far as the bounds would let it
// read one notification at a time, whatever the notifications' sizes.
func TestChunkOfKeepsTheBounds(t *testing.T) {
	for _, room := range []int{1, 2, 7, 64, 65, 2048} {
		for _, byteRoom := range []int{-1, 0, 1, maxNotificationSize - 1, maxNotificationSize, 3*maxNotificationSize + 5, 64 << 10, 4 << 20} {
			k := chunkOf(room, byteRoom)
			if k < 1 || k > burstChunk {
				t.Fatalf("chunkOf(%d, %d) = %d, want 1..%d", room, byteRoom, k, burstChunk)
			}
			if k > 1 && (k > room || k*maxNotificationSize > byteRoom) {
				t.Fatalf("chunkOf(%d, %d) = %d: %d of the largest notifications pass a bound", room, byteRoom, k, k)
			}
		}
	}
	if k := chunkOf(2048, 4<<20); k != burstChunk {
		t.Errorf("default bounds: chunk %d, want %d", k, burstChunk)
	}
}

// A burst read from a connection whose notifications go to another's
// buffer (dialled from its config) ends in errNotHeard, not in a burst
// that silently stays empty.
func TestReadBurstDeafConn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, err := fakepg.Listen()
	require.NoError(t, err)
	defer srv.Close()
	src, err := pgx.Connect(ctx, srv.ConnString())
	require.NoError(t, err)
	defer src.Close(ctx)
	_, err = srv.NextConn(ctx)
	require.NoError(t, err)
	deaf, err := pgx.ConnectConfig(ctx, src.Config())
	require.NoError(t, err)
	defer deaf.Close(ctx)
	sess, err := srv.NextConn(ctx)
	require.NoError(t, err)
	require.NoError(t, sess.NotifyN("c", 100, strconv.Itoa))

	// A read, as the waiter's, fills pgx's read buffer (more than one if
	// the first brought in a single notification).
	for {
		require.NoError(t, deaf.PgConn().WaitForNotification(ctx))
		if deaf.PgConn().Frontend().ReadBufferLen() > 0 {
			break
		}
	}
	b := burst{room: 100, byteRoom: 1 << 20, bound: 100}
	err = b.read(deaf, 0)
	require.ErrorIs(t, err, errNotHeard)
	assert.Empty(t, b.ns)
	n, err := src.WaitForNotification(cancelledCtx)
	require.NoError(t, err, "the notification went to the connection dialled first")
	assert.Equal(t, "0", n.Payload)
}
