package bus

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
)

// These tests drive a Subscription's buffer directly, as the dispatcher
// does, with no server.

func numbered(from, n int) []*pgnotify.Notification {
	ns := make([]*pgnotify.Notification, n)
	for i := range ns {
		ns[i] = &pgnotify.Notification{Channel: "c", Payload: strconv.Itoa(from + i)}
	}
	return ns
}

func bareSubscription(buffer int, p Overflow) *Subscription {
	return newSubscription(nil, []string{"c"}, newSubscribeConfig([]SubscribeOption{WithBuffer(buffer), WithOverflow(p)}))
}

// nextNow returns the next event that is already there, or fails.
func nextNow(t *testing.T, s *Subscription) (pgnotify.Event, bool) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.mu.Lock()
	ev, ok := s.popLocked()
	s.mu.Unlock()
	if !ok {
		if _, err := s.Next(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Next on an empty subscription: %v, want context.Canceled", err)
		}
	}
	return ev, ok
}

// TestDropOldestAccountsForEveryLoss delivers random bursts to a small
// DropOldest buffer, with pgnotify.Dead and pgnotify.Recovered events among them, and reads
// at random moments: between two notifications the reader sees (and before
// the first), the pgnotify.Lagged counts add up to exactly the numbers skipped, and
// pgnotify.Dead/pgnotify.Recovered come in order and are never dropped.
func TestDropOldestAccountsForEveryLoss(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const bound = 7
	s := bareSubscription(bound, OverflowDropOldest)
	sent, dropped := 0, 0
	var ctrlSent []pgnotify.Kind
	var ctrlGot []pgnotify.Kind
	next, lagged := 0, 0 // the number the reader expects next; losses reported since
	read := func() {
		for {
			ev, ok := nextNow(t, s)
			if !ok {
				return
			}
			switch ev.Kind {
			case pgnotify.Lagged:
				if ev.Dropped <= 0 {
					t.Fatalf("pgnotify.Lagged with Dropped %d", ev.Dropped)
				}
				lagged += ev.Dropped
			case pgnotify.Dead, pgnotify.Recovered:
				ctrlGot = append(ctrlGot, ev.Kind)
			case pgnotify.Batch:
				for _, n := range ev.Notifications {
					got, _ := strconv.Atoi(n.Payload)
					if got != next+lagged {
						t.Fatalf("got %d after %d reported lost since %d", got, lagged, next)
					}
					next, lagged = got+1, 0
				}
			}
		}
	}
	for range 2000 {
		switch r := rng.IntN(10); {
		case r < 6:
			k := 1 + rng.IntN(3*bound)
			dropped += s.deliver(numbered(sent, k))
			sent += k
		case r < 7:
			k := pgnotify.Dead + pgnotify.Kind(rng.IntN(2))
			s.pushEvent(pgnotify.Event{Kind: k})
			ctrlSent = append(ctrlSent, k)
		default:
			read()
		}
		if n := s.q.len(); n > bound {
			t.Fatalf("buffer holds %d, bound %d", n, bound)
		}
	}
	read()
	if next+lagged != sent {
		t.Errorf("accounted for %d (read up to %d, %d lost after), sent %d", next+lagged, next, lagged, sent)
	}
	if len(ctrlGot) != len(ctrlSent) {
		t.Fatalf("got %d pgnotify.Dead/pgnotify.Recovered events, sent %d", len(ctrlGot), len(ctrlSent))
	}
	for i := range ctrlSent {
		if ctrlGot[i] != ctrlSent[i] {
			t.Fatalf("event %d: got %v, want %v", i, ctrlGot[i], ctrlSent[i])
		}
	}
	if dropped == 0 {
		t.Fatal("nothing was dropped: the test proves nothing")
	}
}

// TestDropOldestLaggedBeforeTheKept: 100 into a buffer of 10 gives one
// pgnotify.Lagged of 90, then the newest 10.
func TestDropOldestLaggedBeforeTheKept(t *testing.T) {
	s := bareSubscription(10, OverflowDropOldest)
	if d := s.deliver(numbered(0, 60)); d != 50 {
		t.Fatalf("dropped %d, want 50", d)
	}
	if d := s.deliver(numbered(60, 40)); d != 40 {
		t.Fatalf("dropped %d, want 40", d)
	}
	ev, _ := nextNow(t, s)
	if ev.Kind != pgnotify.Lagged || ev.Dropped != 90 {
		t.Fatalf("got %v with Dropped %d, want pgnotify.Lagged 90", ev.Kind, ev.Dropped)
	}
	ev, _ = nextNow(t, s)
	if ev.Kind != pgnotify.Batch || len(ev.Notifications) != 10 || ev.Notifications[0].Payload != "90" {
		t.Fatalf("got %v %d, want the newest 10 from 90", ev.Kind, len(ev.Notifications))
	}
	if _, ok := nextNow(t, s); ok {
		t.Fatal("more events than expected")
	}
}

// TestRingGrowsLazily: an idle subscription holds no buffer; one that has
// been busy lets a large buffer go once read empty.
func TestRingGrowsLazily(t *testing.T) {
	s := bareSubscription(100000, OverflowDropOldest)
	if s.q.buf != nil {
		t.Fatal("a new subscription holds a buffer")
	}
	s.deliver(numbered(0, 3))
	if n := len(s.q.buf); n != 8 {
		t.Fatalf("3 notifications grew the buffer to %d slots, want 8", n)
	}
	s.deliver(numbered(3, 1000))
	if n := len(s.q.buf); n != 1024 {
		t.Fatalf("1003 notifications: %d slots, want 1024", n)
	}
	nextNow(t, s)
	if s.q.buf != nil {
		t.Fatal("an emptied large buffer is kept")
	}
}

// TestBlockWaitsForRoom: under OverflowBlock, deliver waits for the reader,
// loses nothing, and is released by Close.
func TestBlockWaitsForRoom(t *testing.T) {
	s := bareSubscription(2, OverflowBlock)
	done := make(chan int)
	go func() { done <- s.deliver(numbered(0, 50)) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for want := 0; want < 50; {
		ev, err := s.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Kind != pgnotify.Batch || len(ev.Notifications) > 2 {
			t.Fatalf("got %v of %d", ev.Kind, len(ev.Notifications))
		}
		for _, n := range ev.Notifications {
			if n.Payload != strconv.Itoa(want) {
				t.Fatalf("got %s, want %d", n.Payload, want)
			}
			want++
		}
	}
	if d := <-done; d != 0 {
		t.Fatalf("dropped %d under OverflowBlock", d)
	}

	go func() { done <- s.deliver(numbered(50, 10)) }()
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.blocked })
	s.shut(pgnotify.ErrClosed, false)
	<-done
	if _, err := s.Next(ctx); !errors.Is(err, pgnotify.ErrClosed) {
		t.Fatalf("Next after shut: %v, want pgnotify.ErrClosed", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSubscribeOptionDefaults(t *testing.T) {
	c := newSubscribeConfig([]SubscribeOption{WithBuffer(0), WithBuffer(-3), WithOverflow(Overflow(9))})
	if c.buffer != defaultBuffer || c.overflow != OverflowDropOldest {
		t.Fatalf("got %+v, want the defaults", c)
	}
}

func TestNewBusStartsNothing(t *testing.T) {
	called := false
	b := New(func(context.Context) (*pgx.Conn, error) { called = true; return nil, errors.New("no") })
	_, err := b.Subscribe(context.Background(), []string{"ok", ""})
	if !errors.Is(err, pgnotify.ErrInvalidChannel) {
		t.Fatalf("Subscribe with an empty name: %v, want pgnotify.ErrInvalidChannel", err)
	}
	if called || b.started {
		t.Fatal("NewBus or a rejected Subscribe dialled or started a goroutine")
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(context.Background(), []string{"ok"}); !errors.Is(err, pgnotify.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want pgnotify.ErrClosed", err)
	}
}

// TestNextFromTwoGoroutinesFailsAtOnce: a second goroutine in Next while
// the first is blocked there gets an error at once, and the first still
// gets the stream.
func TestNextFromTwoGoroutinesFailsAtOnce(t *testing.T) {
	s := bareSubscription(8, OverflowDropOldest)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first := make(chan pgnotify.Event, 1)
	go func() {
		ev, err := s.Next(ctx)
		if err != nil {
			t.Error(err)
		}
		first <- ev
	}()
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.waiting })
	if _, err := s.Next(ctx); !errors.Is(err, errConcurrentNext) {
		t.Fatalf("second Next: %v, want errConcurrentNext at once", err)
	}
	s.deliver(numbered(0, 3))
	if ev := <-first; len(ev.Notifications) != 3 {
		t.Fatalf("the first reader got %+v, want the 3 notifications", ev)
	}
}

// TestHugeBufferDoesNotHang: WithBuffer(math.MaxInt) is bounded, and
// delivering to it returns.
func TestHugeBufferDoesNotHang(t *testing.T) {
	s := bareSubscription(math.MaxInt, OverflowDropOldest)
	if s.bound != maxBuffer {
		t.Errorf("bound %d, want maxBuffer", s.bound)
	}
	done := make(chan int, 1)
	go func() { done <- s.deliver(numbered(0, 100)) }()
	select {
	case d := <-done:
		if d != 0 {
			t.Fatalf("dropped %d of 100 under a bound of %d", d, s.bound)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("deliver to a WithBuffer(math.MaxInt) subscription still running after 10s")
	}
	ev, ok := nextNow(t, s)
	if !ok || len(ev.Notifications) != 100 {
		t.Fatalf("got %+v, want the 100", ev)
	}
}
