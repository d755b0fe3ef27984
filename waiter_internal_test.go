package pgnotify

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/seed-c59d106d/pgnotify/internal/fakepg"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testOwner is an owner for a waiter run without a Manager: it records the
// hooks a member calls.
type testOwner struct {
	ready chan struct{} // cap 1: pushReady was called
	done  chan error    // waiterDone's cause
}

func (o *testOwner) pushReady(*member, bool) {
	select {
	case o.ready <- struct{}{}:
	default:
	}
}

func (o *testOwner) offerLoan(*loan) bool { return false }

func (o *testOwner) waiterDone(_ *member, cause error) { o.done <- cause }

func (o *testOwner) sampleQueue(float64, func() []any) {}

// TestWaiterUnderTestOwner: a member's waiter reads, publishes and stops
// through its owner's hooks alone, with no Manager around it.
func TestWaiterUnderTestOwner(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, err := fakepg.Listen()
	require.NoError(t, err)
	defer srv.Close()
	conn, err := pgx.Connect(ctx, srv.ConnString())
	require.NoError(t, err)
	defer conn.Close(ctx)
	sess, err := srv.NextConn(ctx)
	require.NoError(t, err)

	own := &testOwner{ready: make(chan struct{}, 1), done: make(chan error, 1)}
	cfg := newConfig([]Option{WithHealthCheck(0, 0)})
	mb := &member{own: own, cfg: &cfg, stats: &counters{}, conn: conn, netConn: conn.PgConn().Conn(),
		exited: make(chan struct{}), wake: make(chan struct{}, 1), channels: map[string]struct{}{}}
	mb.start()

	const n = 300
	require.NoError(t, sess.NotifyN("c", n, strconv.Itoa))
	var got []string
	for len(got) < n {
		select {
		case <-own.ready:
		case <-ctx.Done():
			t.Fatalf("got %d of %d notifications", len(got), n)
		}
		mb.mu.Lock()
		for _, x := range mb.pending {
			got = append(got, x.Payload)
		}
		mb.pending, mb.pendingBytes, mb.queued = nil, 0, false
		mb.mu.Unlock()
		mb.roomFreed()
	}
	for i, p := range got {
		require.Equal(t, strconv.Itoa(i), p)
	}

	mb.requestStop()
	<-mb.exited
	assert.NoError(t, <-own.done, "removed, not dead")
	assert.False(t, conn.IsClosed(), "the connection is back with its owner")
}
