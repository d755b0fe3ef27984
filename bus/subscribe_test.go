package bus_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify/bus"
)

// TestSubscribeCancelledWhileListenOnTheWire: a Subscribe whose ctx ends
// while its LISTEN is on the wire returns only once the channel is neither
// listened nor being changed: nothing is left LISTENed that was not
// before.
func TestSubscribeCancelledWhileListenOnTheWire(t *testing.T) {
	ctx := testContext(t)
	b := newBus(t, &busDialer{})
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bus.SetTestBeforeApply(b, func(listen bool, chs []string) {
		if !listen || !slices.Contains(chs, "onwire") {
			return
		}
		// The LISTEN goes out once the Subscribe waiting for it has given up.
		cancel()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if n, _, _ := bus.ChannelState(b, "onwire"); n == 0 || time.Now().After(deadline) {
				return
			}
			time.Sleep(time.Millisecond)
		}
	})
	warm := subscribe(t, ctx, b, []string{"warm"})

	_, err := b.Subscribe(sctx, []string{"onwire"})
	require.ErrorIs(t, err, context.Canceled)
	n, listened, inflight := bus.ChannelState(b, "onwire")
	assert.Zero(t, n)
	assert.False(t, listened, "the channel is still LISTENed after Subscribe failed")
	assert.False(t, inflight, "a LISTEN or UNLISTEN of the channel is still on the wire after Subscribe failed")
	assertNotListened(t, ctx, b, warm, "warm", "onwire")
}
