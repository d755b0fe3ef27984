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
