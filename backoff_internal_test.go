package pgnotify

import (
	"context"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/seed-c59d106d/pgnotify/internal/testkit"
)

// testServerURL is the server TestMain provides (see SetTestServer).
var testServerURL string

// simClock is a test's simulated time for the reconnect backoff: the
// backoff reads it, each wait between attempts moves it on (returning at
// once), and the test moves it to stand for a connection's life. It
// records every wait the Manager chose.
type simClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func newSimClock() *simClock { return &simClock{now: time.Unix(0, 0)} }

func (c *simClock) read() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *simClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *simClock) wait(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	return ctx.Err()
}

// chosen returns the waits recorded since the first from.
func (c *simClock) chosen(from int) []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.waits[from:])
}

// simulated makes m's reconnect backoff run on c. Call it before the first
// Add.
func (c *simClock) simulated(m *Manager) {
	m.test.clock, m.test.wait = c.read, c.wait
}

// nextKind returns m's next event, failing t unless it is of kind k.
func nextKind(t *testing.T, ctx context.Context, m *Manager, k Kind) Event {
	t.Helper()
	for {
		ev, err := m.Next(ctx)
		if err != nil {
			t.Fatalf("Next, waiting for %v: %v", k, err)
		}
		if ev.Kind == Batch || ev.Kind == Idle {
			continue
		}
		if ev.Kind != k {
			t.Fatalf("event %v (%v), want %v", ev.Kind, ev.Err, k)
		}
		return ev
	}
}

// terminate ends the backend of conn, as an operator's
// pg_terminate_backend does.
func terminate(t *testing.T, ctx context.Context, admin, conn *pgx.Conn) {
	t.Helper()
	var ok bool
	if err := admin.QueryRow(ctx, "SELECT pg_terminate_backend($1)", conn.PgConn().PID()).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend: %v, %v", ok, err)
	}
}

// TestReconnectStormKeepsOutagesShort: a member whose backend is killed
// every 0.3–0.7 s (simulated) for 20 s is replaced after one wait of min
// each time, with the default backoff (100ms to 5s): the outage ends with every
// connection that lived at least as long as the wait before it.
func TestReconnectStormKeepsOutagesShort(t *testing.T) {
	testkit.RequireServer(t)
	ctx := testkit.Context(t, 2*time.Minute)
	clock := newSimClock()
	m := NewManager(WithReconnect(Redial, 100*time.Millisecond, 5*time.Second), WithHealthCheck(0, 0))
	clock.simulated(m)
	t.Cleanup(func() { m.Close(context.Background()) })
	admin := testkit.Connect(t, testServerURL, nil)
	conn := testkit.Connect(t, testServerURL, nil)
	if err := m.Add(ctx, conn); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(17, 2))
	start := clock.read()
	var outages []time.Duration
	attempts := 0
	for clock.read().Sub(start) < 20*time.Second {
		clock.advance(300*time.Millisecond + time.Duration(rng.Int64N(int64(400*time.Millisecond))))
		before := len(clock.chosen(0))
		terminate(t, ctx, admin, conn)
		nextKind(t, ctx, m, Dead)
		conn = nextKind(t, ctx, m, Recovered).Conn
		waits := clock.chosen(before)
		attempts += len(waits)
		var out time.Duration
		for _, w := range waits {
			out += w
		}
		outages = append(outages, out)
	}
	var deaf time.Duration
	for _, d := range outages {
		deaf += d
	}
	t.Logf("storm: %d kills in %v (simulated), %d reconnect attempts; outages (waits chosen) longest %v, waiting %.1f%% of the time",
		len(outages), clock.read().Sub(start).Round(time.Millisecond), attempts,
		slices.Max(outages), 100*deaf.Seconds()/clock.read().Sub(start).Seconds())
	if attempts != len(outages) {
		t.Errorf("%d reconnect attempts for %d kills: want one each", attempts, len(outages))
	}
	for i, d := range outages {
		if d != 100*time.Millisecond {
			t.Errorf("outage %d waited %v before its connection, want min (100ms) each time", i+1, d)
		}
	}
}

// refusedAddr returns an address on which nothing listens: dialling it is
// refused.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestReconnectServerDownIsNotHammered: with the default backoff, a
// Manager whose server refuses connections for 30 s (simulated) after its
// member died makes about 17 attempts, not hundreds (300 with the old
// zero-valued max, a constant 100ms), and is back
// within max (5 s) of the server's return.
func TestReconnectServerDownIsNotHammered(t *testing.T) {
	testkit.RequireServer(t)
	ctx := testkit.Context(t, 2*time.Minute)
	refused, err := pgx.ParseConfig(testServerURL)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(refusedAddr(t))
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	refused.Host, refused.Port = host, uint16(p)
	refused.Fallbacks = nil
	clock := newSimClock()
	var back time.Time
	var attempts int
	var backAfter time.Duration
	dial := func(ctx context.Context, g Garbage) (*pgx.Conn, error) {
		attempts++
		if clock.read().Before(back) {
			return pgx.ConnectConfig(ctx, refused)
		}
		backAfter = clock.read().Sub(back)
		return Redial(ctx, g)
	}
	m := NewManager(WithReconnect(dial, 0, 0), WithHealthCheck(0, 0))
	clock.simulated(m)
	t.Cleanup(func() { m.Close(context.Background()) })
	admin := testkit.Connect(t, testServerURL, nil)
	conn := testkit.Connect(t, testServerURL, nil)
	if err := m.Add(ctx, conn); err != nil {
		t.Fatal(err)
	}
	clock.advance(time.Minute) // a long life: the outage starts from min
	back = clock.read().Add(30 * time.Second)
	terminate(t, ctx, admin, conn)
	nextKind(t, ctx, m, Dead)
	nextKind(t, ctx, m, Recovered)
	waits := clock.chosen(0)
	t.Logf("server down 30 s (simulated): %d attempts, longest wait %v; reconnected %v after it came back",
		attempts, slices.Max(waits).Round(time.Millisecond), backAfter.Round(time.Millisecond))
	if attempts > 40 {
		t.Errorf("%d attempts in 30 s against a server that refuses them", attempts)
	}
	if backAfter > 5*time.Second {
		t.Errorf("reconnected %v after the server came back, more than max (5s)", backAfter)
	}
}
