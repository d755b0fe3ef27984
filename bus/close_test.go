package bus_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify/bus"
)

// TestCloseReturnsByCtxWhenDialIgnoresIt: Close returns by its ctx's end
// while the first dial ignores its own ctx, and the connection that dial
// makes later is closed.
func TestCloseReturnsByCtxWhenDialIgnoresIt(t *testing.T) {
	requireServer(t)
	ctx := testContext(t)
	release := make(chan struct{})
	entered := make(chan struct{})
	var made atomic.Pointer[pgx.Conn]
	b := bus.New(func(context.Context) (*pgx.Conn, error) {
		close(entered)
		<-release // ignores its ctx
		c, err := pgx.Connect(context.Background(), connString)
		made.Store(c)
		return c, err
	})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := b.Subscribe(short, []string{"never"})
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	<-entered

	closed := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		closed <- b.Close(cctx)
	}()
	select {
	case err := <-closed:
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(20 * time.Second):
		t.Fatal("Close(300ms) still waiting for a dial that ignores its ctx")
	}
	close(release)
	released = true
	waitUntil(t, 10*time.Second, "the late connection to be dialled", func() bool { return made.Load() != nil })
	select {
	case <-made.Load().PgConn().CleanupDone():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection the late dial made is still open")
	}
	assert.NoError(t, b.Close(ctx), "Close again")
}
