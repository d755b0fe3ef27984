package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/bus"
)

// TestBatchReachesDropOldestBeforeBlock: a stalled OverflowBlock
// subscription on b, subscribed first, does not keep the batch in hand
// from a DropOldest subscription on a and b; closing the stalled one lets
// the rest through.
func TestBatchReachesDropOldestBeforeBlock(t *testing.T) {
	ctx := testContext(t)
	b := newBus(t, &busDialer{}, bus.WithMaxPending(16))
	stalled := subscribe(t, ctx, b, []string{"blk_b"}, bus.WithBuffer(1), bus.WithOverflow(bus.OverflowBlock))
	free := subscribe(t, ctx, b, []string{"blk_a", "blk_b"})
	notifyMany(t, messagesOn("blk_b", "", 10)...)

	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ev, err := free.Next(wait)
	require.NoError(t, err, "the DropOldest subscription got nothing while the Block one stalls")
	require.Equal(t, pgnotify.Batch, ev.Kind)
	got := len(ev.Notifications)
	assert.Equal(t, "0", ev.Notifications[0].Payload)

	require.NoError(t, stalled.Close())
	if got < 10 {
		assert.Equal(t, seq("", 10)[got:], subPayloads(t, ctx, free, 10-got))
	}
}
