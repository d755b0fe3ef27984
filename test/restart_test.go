package pgnotifytest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
)

func TestServerRestartRecoversEveryMember(t *testing.T) {
	for _, mode := range []string{"fast", "immediate"} {
		t.Run(mode, func(t *testing.T) {
			ctx := testContext(t)
			cluster := ownCluster(t)
			url := cluster.ConnString()
			dial := func(ctx context.Context, _ pgnotify.Garbage) (*pgx.Conn, error) {
				return pgx.Connect(ctx, url)
			}
			const members = 3
			var cs []*pgx.Conn
			for i := range members {
				c, err := pgx.Connect(ctx, url)
				require.NoError(t, err)
				require.NoError(t, pgnotify.Listen(ctx, c, "restart", fmt.Sprint("own", i)))
				cs = append(cs, c)
			}
			m := pgnotify.NewManager(pgnotify.WithReconnect(dial, 5*time.Millisecond, 100*time.Millisecond))
			defer m.Close(ctx)
			require.NoError(t, m.Add(ctx, cs...))

			start := time.Now()
			require.NoError(t, cluster.Restart(ctx, mode))
			dead, recovered := map[*pgx.Conn]bool{}, map[*pgx.Conn]*pgx.Conn{}
			for len(recovered) < members {
				ev := next(t, ctx, m)
				switch ev.Kind {
				case pgnotify.Dead:
					dead[ev.Conn] = true
				case pgnotify.Recovered:
					require.True(t, dead[ev.Replaced], "Recovered before Dead")
					recovered[ev.Replaced] = ev.Conn
				}
			}
			t.Logf("restart -m %s: all %d members Dead then Recovered %v after the restart began",
				mode, members, time.Since(start).Round(time.Millisecond))
			for _, g := range m.Garbage() {
				t.Errorf("left in garbage: %v", g.Err)
			}

			// Channels are listened again; everything sent after the
			// Recovered events arrives exactly once, in order.
			sender, err := pgx.Connect(ctx, url)
			require.NoError(t, err)
			defer sender.Close(ctx)
			const per = 200
			msgs := make([]pgnotify.Message, 0, per)
			for i := range per {
				msgs = append(msgs, pgnotify.Message{Channel: "restart", Payload: fmt.Sprint(i)})
			}
			require.NoError(t, pgnotify.Notify(ctx, sender, msgs...))
			for i := range members {
				require.NoError(t, pgnotify.Notify(ctx, sender, pgnotify.Message{Channel: fmt.Sprint("own", i), Payload: "own"}))
			}
			got := collect(t, ctx, m, members*(per+1))
			want := append(seq("", per), "own")
			for _, c := range recovered {
				assert.Equal(t, want, got[c])
			}
			t.Logf("sent %d, delivered %d", members*(per+1), sumLen(got))
		})
	}
}

func sumLen(m map[*pgx.Conn][]string) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}

// TestChaos runs churn, lending and a killer at once, with auto-reconnect,
// and checks what must hold whatever happens: connections that were never
// killed get every notification exactly once and in order, every survivor
// is usable, and (TestMain) no goroutine is left.
func TestChaos(t *testing.T) {
	ctx := testContext(t)
	const stable, victims, churners, rounds, perRound = 3, 4, 2, 30, 20

	var stables []*pgx.Conn
	for i := range stable {
		stables = append(stables, listener(t, fmt.Sprint("stable", i)))
	}
	var vs []*pgx.Conn
	for range victims {
		vs = append(vs, listener(t, "victim"))
	}
	var (
		mu       sync.Mutex
		killable = map[uint32]bool{} // PIDs the killer may terminate
	)
	for _, v := range vs {
		killable[v.PgConn().PID()] = true
	}
	dial := func(ctx context.Context, _ pgnotify.Garbage) (*pgx.Conn, error) {
		c, err := pgx.Connect(ctx, connString)
		if err == nil {
			mu.Lock()
			killable[c.PgConn().PID()] = true
			mu.Unlock()
		}
		return c, err
	}
	m := newManager(t, pgnotify.WithReconnect(dial, time.Millisecond, 20*time.Millisecond), pgnotify.WithMaxPending(16))
	require.NoError(t, m.Add(ctx, stables...))
	require.NoError(t, m.Add(ctx, vs...))

	got := map[*pgx.Conn][]string{}
	consumerDone := make(chan struct{})
	cctx, stopConsumer := context.WithCancel(ctx)
	go func() {
		defer close(consumerDone)
		for ev, err := range m.Events(cctx) {
			if err != nil {
				return
			}
			if ev.Kind == pgnotify.Batch {
				mu.Lock()
				for _, n := range ev.Notifications {
					got[ev.Conn] = append(got[ev.Conn], n.Payload)
				}
				mu.Unlock()
			}
		}
	}()

	var wg sync.WaitGroup
	var stop atomic.Bool
	var kills atomic.Int64
	// The killer terminates random killable backends.
	wg.Add(1)
	go func() {
		defer wg.Done()
		admin := connect(t)
		for !stop.Load() {
			mu.Lock()
			var pids []uint32
			for pid := range killable {
				pids = append(pids, pid)
			}
			mu.Unlock()
			if len(pids) > 0 {
				pid := pids[rand.IntN(len(pids))]
				if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); assert.NoError(t, err) {
					kills.Add(1)
				}
				mu.Lock()
				delete(killable, pid)
				mu.Unlock()
			}
			// Pace the killer by round trips, not by sleeping.
			_, err := admin.Exec(ctx, "SELECT pg_sleep(0.005)")
			assert.NoError(t, err)
		}
	}()
	// Churners add, lend and remove their own connections.
	for w := range churners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := listener(t, fmt.Sprint("churn", w))
			for !stop.Load() {
				if !assert.NoError(t, m.Add(ctx, c)) {
					return
				}
				assert.NoError(t, m.Do(ctx, c, func(c *pgx.Conn) error { return c.PgConn().Ping(ctx) }))
				if !assert.NoError(t, m.Remove(ctx, c)) {
					return
				}
			}
		}()
	}
	// Lenders run Do on random members, which may die under them.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			cs := m.Conns()
			if len(cs) == 0 {
				continue
			}
			_ = m.Do(ctx, cs[rand.IntN(len(cs))], func(c *pgx.Conn) error {
				_, err := c.Exec(ctx, "SELECT 1")
				return err
			})
		}
	}()

	sender := connect(t)
	for r := range rounds {
		for i := range stable {
			msgs := make([]pgnotify.Message, perRound)
			for k := range msgs {
				msgs[k] = pgnotify.Message{Channel: fmt.Sprint("stable", i), Payload: fmt.Sprint(r*perRound + k)}
			}
			require.NoError(t, pgnotify.Notify(ctx, sender, msgs...))
		}
		require.NoError(t, pgnotify.Notify(ctx, sender, pgnotify.Message{Channel: "victim", Payload: fmt.Sprint(r)}))
	}
	// Keep the chaos going for a while after the last send.
	waitUntil(t, 30*time.Second, "25 kills", func() bool { return kills.Load() >= 25 })
	stop.Store(true)
	within(t, time.Minute, "the killers to stop", wg.Wait)

	want := seq("", rounds*perRound)
	waitUntil(t, 20*time.Second, "the stable connections' notifications", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range stables {
			if len(got[c]) < len(want) {
				return false
			}
		}
		return true
	})
	stopConsumer()
	receive(t, consumerDone, "the consumer to stop")
	for _, c := range stables {
		assert.Equal(t, want, got[c], "stable connection lost, duplicated or reordered")
	}
	// Every survivor is usable.
	for _, c := range m.Conns() {
		assert.NoError(t, m.Do(ctx, c, func(c *pgx.Conn) error { return c.PgConn().Ping(ctx) }))
	}
	s := m.Stats()
	t.Logf("kills %d, deaths %d, recoveries %d, reconnect attempts %d (failed %d), members now %d",
		kills.Load(), s.Deaths, s.Recoveries, s.ReconnectAttempts, s.ReconnectFailures, s.Members)
	assert.Positive(t, kills.Load())
}
