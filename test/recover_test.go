package pgnotifytest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
)

// dialer returns a DialFunc that connects to the test server, counting its
// calls. What it opens belongs to the manager, which closes it.
func dialer(t testing.TB, calls *atomic.Int64) pgnotify.DialFunc {
	return func(ctx context.Context, dead pgnotify.Garbage) (*pgx.Conn, error) {
		if calls != nil {
			calls.Add(1)
		}
		return pgx.Connect(ctx, connString)
	}
}

func TestManagerRecover(t *testing.T) {
	ctx := testContext(t)
	m, old := deadMember(t, ctx, []string{"rec", "Rec Two"})

	require.NoError(t, m.Recover(ctx, dialer(t, nil)))
	ev := next(t, ctx, m)
	require.Equal(t, pgnotify.Recovered, ev.Kind)
	assert.Equal(t, old, ev.Replaced)
	require.NotNil(t, ev.Conn)
	assert.Empty(t, m.Garbage())
	assert.Equal(t, []*pgx.Conn{ev.Conn}, m.Conns())

	// The new connection listens on the same channels before the event.
	var chs []string
	require.NoError(t, m.Do(ctx, ev.Conn, func(c *pgx.Conn) error {
		var err error
		chs, err = pgnotify.ListeningChannels(ctx, c)
		return err
	}))
	assert.Equal(t, []string{"Rec Two", "rec"}, chs)
	notify(t, "Rec Two", "after")
	got, _ := drainPayloads(t, ctx, m)
	assert.Equal(t, map[*pgx.Conn][]string{ev.Conn: {"after"}}, got)
	assert.EqualValues(t, 1, m.Stats().Recoveries)
}

func TestManagerRecoverFailureStaysInGarbage(t *testing.T) {
	ctx := testContext(t)
	m, old := deadMember(t, ctx, []string{"recfail"})

	refused := errors.New("refused")
	err := m.Recover(ctx, func(context.Context, pgnotify.Garbage) (*pgx.Conn, error) { return nil, refused })
	require.ErrorIs(t, err, refused)
	require.Len(t, m.Garbage(), 1)
	assert.Equal(t, old, m.Garbage()[0].Conn)
	// Nothing live and nothing being recovered: the stream ends.
	_, err = m.Next(ctx)
	assert.Equal(t, io.EOF, err)
	s := m.Stats()
	assert.EqualValues(t, 1, s.ReconnectAttempts)
	assert.EqualValues(t, 1, s.ReconnectFailures)
	assert.EqualValues(t, map[string]uint64{"57P01": 1}, s.DeathsByCause)
}

func TestManagerRecoverRefusesReplacementInTransaction(t *testing.T) {
	ctx := testContext(t)
	m, old := deadMember(t, ctx, []string{"rectx"})

	// A replacement inside a transaction could never receive anything.
	var replacement *pgx.Conn
	err := m.Recover(ctx, func(ctx context.Context, _ pgnotify.Garbage) (*pgx.Conn, error) {
		c, err := pgx.Connect(ctx, connString)
		if err == nil {
			replacement = c
			_, err = c.Exec(ctx, "BEGIN")
		}
		return c, err
	})
	require.ErrorContains(t, err, "transaction")
	require.Len(t, m.Garbage(), 1)
	assert.Equal(t, old, m.Garbage()[0].Conn)
	assert.True(t, replacement.IsClosed(), "a refused replacement is closed")
}

func TestManagerReconnectAutomatically(t *testing.T) {
	ctx := testContext(t)
	var calls atomic.Int64
	a, b := listener(t, "auto"), listener(t, "auto")
	m := newManager(t, pgnotify.WithReconnect(dialer(t, &calls), time.Millisecond, 20*time.Millisecond))
	require.NoError(t, m.Add(ctx, a, b))

	for round := range 3 {
		victims := m.Conns()
		for _, c := range victims {
			adminExec(t, "SELECT pg_terminate_backend($1)", c.PgConn().PID())
		}
		// Every member: Dead, then Recovered (which comes after its Dead).
		dead, recovered := map[*pgx.Conn]bool{}, map[*pgx.Conn]bool{}
		for len(recovered) < len(victims) {
			ev := next(t, ctx, m)
			switch ev.Kind {
			case pgnotify.Dead:
				dead[ev.Conn] = true
			case pgnotify.Recovered:
				require.True(t, dead[ev.Replaced], "Recovered before its Dead")
				recovered[ev.Replaced] = true
			}
		}
		require.Len(t, m.Conns(), 2, "round %d", round)
		// Everything sent after the Recovered events arrives exactly once.
		want := seq(fmt.Sprintf("r%d-", round), 50)
		notify(t, "auto", want...)
		got := collect(t, ctx, m, 100)
		for _, c := range m.Conns() {
			assert.Equal(t, want, got[c])
		}
	}
	assert.EqualValues(t, 6, m.Stats().Recoveries)
	assert.Empty(t, m.Garbage())
}

func TestManagerReconnectKeepsSetOpenWhileFailing(t *testing.T) {
	ctx := testContext(t)
	var calls atomic.Int64
	fail := atomic.Bool{}
	fail.Store(true)
	dial := func(ctx context.Context, g pgnotify.Garbage) (*pgx.Conn, error) {
		calls.Add(1)
		if fail.Load() {
			return nil, errors.New("server down")
		}
		return dialer(t, nil)(ctx, g)
	}
	m, c := deadMember(t, ctx, []string{"storm"}, pgnotify.WithReconnect(dial, time.Millisecond, 5*time.Millisecond))
	// While attempts fail the set is not empty: Next waits, not io.EOF.
	waitUntil(t, 10*time.Second, "three failed attempts", func() bool { return calls.Load() >= 3 })
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	_, err := m.Next(short)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, m.Stats().ReconnectFailures, uint64(3))
	fail.Store(false)
	ev := untilKind(t, ctx, m, pgnotify.Recovered)
	assert.Equal(t, c, ev.Replaced)
}

func TestManagerTakeGarbageStopsReconnect(t *testing.T) {
	ctx := testContext(t)
	dial := func(context.Context, pgnotify.Garbage) (*pgx.Conn, error) {
		return nil, errors.New("server down")
	}
	m, c := deadMember(t, ctx, []string{"take"}, pgnotify.WithReconnect(dial, time.Millisecond, 5*time.Millisecond))
	g := m.TakeGarbage()
	require.Len(t, g, 1)
	assert.Equal(t, c, g[0].Conn)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, g[0].Err, &pgErr)
	_, err := m.Next(ctx)
	assert.Equal(t, io.EOF, err)
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestManagerLogsDeathsAndReconnectsNeverPayloads(t *testing.T) {
	ctx := testContext(t)
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	var fail atomic.Bool
	fail.Store(true)
	dial := func(ctx context.Context, g pgnotify.Garbage) (*pgx.Conn, error) {
		if fail.Swap(false) {
			return nil, errors.New("first attempt refused")
		}
		return pgx.Connect(ctx, connString)
	}
	c := listener(t, "logged")
	m := newManager(t, pgnotify.WithLogger(logger), pgnotify.WithReconnect(dial, time.Millisecond, 5*time.Millisecond))
	require.NoError(t, m.Add(ctx, c))
	notify(t, "logged", "secret payload")
	require.NoError(t, m.Do(ctx, c, func(c *pgx.Conn) error { return c.PgConn().Ping(ctx) }))
	adminExec(t, "SELECT pg_terminate_backend($1)", c.PgConn().PID())
	untilKind(t, ctx, m, pgnotify.Recovered)

	out := logs.String()
	assert.Contains(t, out, "connection died")
	assert.Contains(t, out, fmt.Sprintf("pid=%d", c.PgConn().PID()))
	assert.Contains(t, out, "57P01")
	assert.Contains(t, out, "reconnect failed")
	assert.Contains(t, out, "first attempt refused")
	assert.Contains(t, out, "connection recovered")
	assert.NotContains(t, out, "secret payload")
}

// TestManagerRecoverDialReturningMemberLeavesItAlone is issue 7 item 2: a
// DialFunc that hands back a live member must not get it LISTENed behind
// its waiter's back, nor closed: Recover fails for that garbage entry and
// the member carries on.
func TestManagerRecoverDialReturningMemberLeavesItAlone(t *testing.T) {
	ctx := testContext(t)
	m, old := deadMember(t, ctx, []string{"dupdial"})
	b := listener(t, "dupdial-b")
	require.NoError(t, m.Add(ctx, b))

	err := m.Recover(ctx, func(context.Context, pgnotify.Garbage) (*pgx.Conn, error) { return b, nil })
	require.ErrorIs(t, err, pgnotify.ErrAlreadyAdded)
	assert.True(t, backendAlive(t, b.PgConn().PID()), "the member is not closed")
	assert.Equal(t, []*pgx.Conn{b}, m.Conns())
	require.Len(t, m.Garbage(), 1)
	assert.Equal(t, old, m.Garbage()[0].Conn)

	notify(t, "dupdial-b", "still here")
	got, other := drainPayloads(t, ctx, m)
	assert.Empty(t, other, "no Dead event")
	assert.Equal(t, map[*pgx.Conn][]string{b: {"still here"}}, got)
}

// gatedConn holds the first Write after hold is set until release is
// closed, so a test can keep a goroutine inside pgx on the connection.
type gatedConn struct {
	net.Conn
	entered chan struct{} // closed when a held Write begins
	release chan struct{}
	hold    atomic.Bool
}

func (c *gatedConn) Write(p []byte) (int, error) {
	if c.hold.CompareAndSwap(true, false) {
		close(c.entered)
		<-c.release
	}
	return c.Conn.Write(p)
}

// gatedConnect connects to the test server through a gatedConn.
func gatedConnect(t testing.TB) (*pgx.Conn, *gatedConn) {
	t.Helper()
	g := &gatedConn{entered: make(chan struct{}), release: make(chan struct{})}
	c := connectConfig(t, func(cfg *pgx.ConnConfig) {
		cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := new(net.Dialer).DialContext(ctx, network, addr)
			g.Conn = nc
			return g, err
		}
	})
	return c, g
}

// TestManagerRecoverDialReturningConnBeingAdded is issue 7 item 2's second
// half: a connection reserved by an Add in progress (whose round trip is
// on the wire) is not the DialFunc's to hand over. Recover must fail for it
// without touching it, and the Add then succeeds.
func TestManagerRecoverDialReturningConnBeingAdded(t *testing.T) {
	ctx := testContext(t)
	m, old := deadMember(t, ctx, []string{"dupadd"})
	x, gate := gatedConnect(t)
	require.NoError(t, pgnotify.Listen(ctx, x, "dupadd-x"))

	gate.hold.Store(true)
	added := make(chan error, 1)
	go func() { added <- m.Add(ctx, x) }()
	receive(t, gate.entered, "the Add's write") // Add has reserved x and is inside pgx on it

	err := m.Recover(ctx, func(context.Context, pgnotify.Garbage) (*pgx.Conn, error) { return x, nil })
	close(gate.release)
	require.ErrorIs(t, err, pgnotify.ErrAlreadyAdded)
	require.NoError(t, receive(t, added, "the Add to return"), "the Add in progress is unharmed")
	assert.True(t, backendAlive(t, x.PgConn().PID()))
	assert.Equal(t, []*pgx.Conn{x}, m.Conns())
	require.Len(t, m.Garbage(), 1)
	assert.Equal(t, old, m.Garbage()[0].Conn)

	notify(t, "dupadd-x", "added")
	got, other := drainPayloads(t, ctx, m)
	assert.Empty(t, other, "no Dead event")
	assert.Equal(t, map[*pgx.Conn][]string{x: {"added"}}, got)
}

// TestManagerRecoverRefusesDeafReplacement is issue 7 item 4: a DialFunc
// that connects with dead.Conn.Config() unchanged gives a connection that
// hears nothing itself. Recover must refuse it with a clear error, log
// that, close it, and keep the dead one in the garbage set.
func TestManagerRecoverRefusesDeafReplacement(t *testing.T) {
	ctx := testContext(t)
	var logs syncBuffer
	m, old := deadMember(t, ctx, []string{"deaf"}, pgnotify.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))

	var replacement *pgx.Conn
	err := m.Recover(ctx, func(ctx context.Context, dead pgnotify.Garbage) (*pgx.Conn, error) {
		c, err := pgx.ConnectConfig(ctx, dead.Conn.Config())
		replacement = c
		return c, err
	})
	require.ErrorContains(t, err, "did not hear its own NOTIFY")
	require.ErrorContains(t, err, "OnNotification")
	require.NotNil(t, replacement)
	assert.True(t, replacement.IsClosed(), "a refused replacement is closed")
	require.Len(t, m.Garbage(), 1)
	assert.Equal(t, old, m.Garbage()[0].Conn)
	assert.Empty(t, m.Conns())
	assert.Contains(t, logs.String(), "recover failed")
	assert.Contains(t, logs.String(), "did not hear its own NOTIFY")
	_, err = m.Next(ctx)
	assert.Equal(t, io.EOF, err, "no Recovered event")
}

// TestManagerRedialRecovers: Redial, the ready-made DialFunc, reaches the
// dead connection's server with a clean config, and the replacement hears
// what is sent after Recovered. Nothing sent there reaches the dead
// connection's buffer.
func TestManagerRedialRecovers(t *testing.T) {
	ctx := testContext(t)
	m, old := deadMember(t, ctx, []string{"redial"}, pgnotify.WithReconnect(pgnotify.Redial, time.Millisecond, 5*time.Millisecond))
	ev := untilKind(t, ctx, m, pgnotify.Recovered)
	assert.Equal(t, old, ev.Replaced)
	notify(t, "redial", "heard")
	got := collect(t, ctx, m, 1)
	assert.Equal(t, map[*pgx.Conn][]string{ev.Conn: {"heard"}}, got)
	n, _ := old.WaitForNotification(cancelledContext())
	assert.Nil(t, n, "nothing went to the dead connection's buffer")

	_, err := pgnotify.Redial(ctx, pgnotify.Garbage{})
	assert.Error(t, err, "no connection to redial")
}

// TestManagerAddDeafMemberDies: Add can't tell cheaply that a connection is
// deaf (see the report of issue 7 item 4), but its waiter can: a
// notification that went to another connection's buffer makes the member
// Dead with a cause that says why, instead of a member that never yields.
func TestManagerAddDeafMemberDies(t *testing.T) {
	ctx := testContext(t)
	src := connect(t)
	deaf := connectFrom(t, src)
	require.NoError(t, pgnotify.Listen(ctx, deaf, "deaf-add"))
	m := newManager(t)
	require.NoError(t, m.Add(ctx, deaf))

	notify(t, "deaf-add", "lost")
	nctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	ev := next(t, nctx, m)
	require.Equal(t, pgnotify.Dead, ev.Kind, "event %+v", ev)
	assert.Equal(t, deaf, ev.Conn)
	assert.ErrorContains(t, ev.Err, "OnNotification")
	// Where it went: into src, whose config the deaf connection was
	// dialled with.
	n, err := src.WaitForNotification(cancelledContext())
	require.NoError(t, err)
	assert.Equal(t, "lost", n.Payload)
}

// cancelledContext returns a context that is already done. Given it, pgx's
// WaitForNotification returns a notification it already buffered, with no
// I/O, or an error.
func cancelledContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// logEntries decodes the JSON log lines with message msg.
func logEntries(t testing.TB, logs string, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var e map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &e), "log line %q", line)
		if e["msg"] == msg {
			out = append(out, e)
		}
	}
	return out
}

// TestManagerLogsNameServerAndNumberAttemptsPerOutage is issue 7 item 14:
// death and recovery log lines name the server (host, port, database) and
// the PID, and the first failed attempt of an outage is attempt 1, also
// when the outage follows a recent recovery (whose backoff carries on).
func TestManagerLogsNameServerAndNumberAttemptsPerOutage(t *testing.T) {
	ctx := testContext(t)
	cfg, err := pgx.ParseConfig(connString)
	require.NoError(t, err)
	var logs syncBuffer
	var refuse atomic.Bool
	dial := func(ctx context.Context, g pgnotify.Garbage) (*pgx.Conn, error) {
		if refuse.Swap(false) {
			return nil, errors.New("refused once")
		}
		return pgx.Connect(ctx, connString)
	}
	c := listener(t, "outage")
	m := newManager(t, pgnotify.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))),
		pgnotify.WithReconnect(dial, time.Millisecond, 5*time.Millisecond))
	require.NoError(t, m.Add(ctx, c))

	// Two outages in a row, the first attempt of each refused.
	dead := []*pgx.Conn{c}
	for range 2 {
		victim := dead[len(dead)-1]
		refuse.Store(true)
		adminExec(t, "SELECT pg_terminate_backend($1)", victim.PgConn().PID())
		ev := untilKind(t, ctx, m, pgnotify.Recovered)
		require.Equal(t, victim, ev.Replaced)
		dead = append(dead, ev.Conn)
	}

	out := logs.String()
	server := func(e map[string]any) {
		t.Helper()
		assert.Equal(t, cfg.Host, e["host"], "host in %v", e)
		assert.EqualValues(t, cfg.Port, e["port"], "port in %v", e)
		assert.Equal(t, cfg.Database, e["database"], "database in %v", e)
	}
	died := logEntries(t, out, "pgnotify: connection died")
	require.Len(t, died, 2, out)
	failed := logEntries(t, out, "pgnotify: reconnect failed")
	require.Len(t, failed, 2, out)
	recovered := logEntries(t, out, "pgnotify: connection recovered")
	require.Len(t, recovered, 2, out)
	for i := range 2 {
		server(died[i])
		assert.EqualValues(t, dead[i].PgConn().PID(), died[i]["pid"])
		assert.Contains(t, died[i]["err"], "57P01")

		server(failed[i])
		assert.EqualValues(t, 1, failed[i]["attempt"], "the first failed attempt of outage %d", i+1)
		assert.EqualValues(t, dead[i].PgConn().PID(), failed[i]["old_pid"])
		assert.Contains(t, failed[i]["err"], "refused once")

		server(recovered[i])
		assert.EqualValues(t, 2, recovered[i]["attempt"])
		assert.EqualValues(t, dead[i].PgConn().PID(), recovered[i]["old_pid"])
		assert.EqualValues(t, dead[i+1].PgConn().PID(), recovered[i]["pid"])
	}
}
