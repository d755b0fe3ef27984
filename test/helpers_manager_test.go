package pgnotifytest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
)

// managers holds each test's managers (testing.TB → []*pgnotify.Manager),
// so that closing a connection at cleanup can close its owner first.
var managers sync.Map

// newManager returns a manager closed at cleanup, before any connection of
// the test is.
func newManager(t testing.TB, opts ...pgnotify.Option) *pgnotify.Manager {
	t.Helper()
	m := pgnotify.NewManager(opts...)
	ms, _ := managers.LoadOrStore(t, &[]*pgnotify.Manager{})
	*ms.(*[]*pgnotify.Manager) = append(*ms.(*[]*pgnotify.Manager), m)
	t.Cleanup(func() { closeManagers(t) })
	return m
}

// closeManagers closes the managers of t (Close is idempotent).
func closeManagers(t testing.TB) {
	ms, ok := managers.Load(t)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range *ms.(*[]*pgnotify.Manager) {
		assert.NoError(t, m.Close(ctx))
	}
}

// listener connects and listens on channels.
func listener(t testing.TB, channels ...string) *pgx.Conn {
	t.Helper()
	c := connect(t)
	require.NoError(t, pgnotify.Listen(testContext(t), c, channels...))
	return c
}

// notify sends payloads on channel from a fresh session, one transaction.
func notify(t testing.TB, channel string, payloads ...string) {
	t.Helper()
	msgs := make([]pgnotify.Message, len(payloads))
	for i, p := range payloads {
		msgs[i] = pgnotify.Message{Channel: channel, Payload: p}
	}
	require.NoError(t, pgnotify.Notify(testContext(t), notifier(t), msgs...))
}

var notifierConns sync.Map // testing.TB → *pgx.Conn

// notifier returns one sending connection per test.
func notifier(t testing.TB) *pgx.Conn {
	t.Helper()
	if c, ok := notifierConns.Load(t); ok {
		return c.(*pgx.Conn)
	}
	c := connect(t)
	notifierConns.Store(t, c)
	t.Cleanup(func() { notifierConns.Delete(t) })
	return c
}

// next calls m.Next and fails the test on error.
func next(t testing.TB, ctx context.Context, m *pgnotify.Manager) pgnotify.Event {
	t.Helper()
	ev, err := m.Next(ctx)
	require.NoError(t, err)
	return ev
}

// payloads collects the payloads of Batch events on conn until want have
// arrived, failing on any other event kind.
func collect(t testing.TB, ctx context.Context, m *pgnotify.Manager, want int) map[*pgx.Conn][]string {
	t.Helper()
	got := map[*pgx.Conn][]string{}
	for n := 0; n < want; {
		ev := next(t, ctx, m)
		require.Equal(t, pgnotify.Batch, ev.Kind, "event %+v", ev)
		for _, x := range ev.Notifications {
			got[ev.Conn] = append(got[ev.Conn], x.Payload)
		}
		n += len(ev.Notifications)
	}
	return got
}

func seq(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// drainPayloads runs one drain pass and returns its payloads per connection,
// with any Dead events.
func drainPayloads(t testing.TB, ctx context.Context, m *pgnotify.Manager) (map[*pgx.Conn][]string, []pgnotify.Event) {
	t.Helper()
	evs, err := m.Drain(ctx)
	require.NoError(t, err)
	got := map[*pgx.Conn][]string{}
	var other []pgnotify.Event
	for _, ev := range evs {
		if ev.Kind != pgnotify.Batch {
			other = append(other, ev)
			continue
		}
		for _, x := range ev.Notifications {
			got[ev.Conn] = append(got[ev.Conn], x.Payload)
		}
	}
	return got, other
}

// causeOf returns the one cause class in m's death counts.
func causeOf(m *pgnotify.Manager) string {
	for c := range m.Stats().DeathsByCause {
		return c
	}
	return ""
}

// drain returns every notification committed before the call that conn
// has received, using a zero-timeout Wait.
func drain(ctx context.Context, t testing.TB, conn *pgx.Conn) []*pgnotify.Notification {
	t.Helper()
	var got []*pgnotify.Notification
	for n, err := range pgnotify.Wait(ctx, conn, 0) {
		require.NoError(t, err)
		require.NotNil(t, n, "a zero-timeout Wait never yields an idle tick")
		got = append(got, n)
	}
	return got
}

// messages turns notifications into Messages, for comparison with what was
// sent.
func messages(ns []*pgnotify.Notification) []pgnotify.Message {
	out := make([]pgnotify.Message, len(ns))
	for i, n := range ns {
		out[i] = pgnotify.Message{Channel: n.Channel, Payload: n.Payload}
	}
	return out
}

// deadMember makes a manager with opts whose one member, listening on
// channels, has just been terminated and yielded its Dead event.
func deadMember(t testing.TB, ctx context.Context, channels []string, opts ...pgnotify.Option) (*pgnotify.Manager, *pgx.Conn) {
	t.Helper()
	c := listener(t, channels...)
	m := newManager(t, opts...)
	require.NoError(t, m.Add(ctx, c))
	adminExec(t, "SELECT pg_terminate_backend($1)", c.PgConn().PID())
	untilKind(t, ctx, m, pgnotify.Dead)
	return m, c
}

// untilKind returns the first event of kind k, failing on errors.
func untilKind(t testing.TB, ctx context.Context, m *pgnotify.Manager, k pgnotify.Kind) pgnotify.Event {
	t.Helper()
	for {
		ev := next(t, ctx, m)
		if ev.Kind == k {
			return ev
		}
	}
}

// lend starts a Do on c whose function holds the connection until release
// is closed, and returns once the function is running. The Do's error is
// sent on the returned channel.
func lend(t testing.TB, ctx context.Context, m *pgnotify.Manager, c *pgx.Conn, release <-chan struct{}) <-chan error {
	t.Helper()
	inside := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- m.Do(ctx, c, func(*pgx.Conn) error {
			close(inside)
			<-release
			return nil
		})
	}()
	select {
	case <-inside:
	case err := <-done:
		t.Fatalf("Do returned before its function ran: %v", err)
	case <-time.After(receiveTimeout):
		t.Fatalf("the lent Do's function did not run within %v", receiveTimeout)
	}
	return done
}
