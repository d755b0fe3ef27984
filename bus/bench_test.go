package bus_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/bus"
	"github.com/seed-c59d106d/pgnotify/internal/fakepg"
)

// payload64 is the payload of every benchmark notification.
var payload64 = strings.Repeat("p", 64)

// fakeBus returns a Bus whose connection goes to a fake server, and a
// function that returns the server's session once the Bus has dialled.
func fakeBus(b *testing.B) (*bus.Bus, func() *fakepg.Conn) {
	b.Helper()
	srv, err := fakepg.Listen()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	bb := bus.New(func(ctx context.Context) (*pgx.Conn, error) {
		return pgx.Connect(ctx, srv.ConnString())
	})
	b.Cleanup(func() { bb.Close(context.Background()) })
	return bb, func() *fakepg.Conn {
		sess, err := srv.NextConn(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		return sess
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkFanOut streams 64-byte notifications on one channel from a
// fake server to K subscriptions, each read by its own goroutine. One op is
// one notification, delivered K times; ns/delivery and cpu-ns/delivery
// (the whole process's CPU time, fake server included, divided by the
// deliveries) are the figures to compare across K.
func BenchmarkFanOut(b *testing.B) {
	for _, k := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("subs=%d", k), func(b *testing.B) {
			benchFanOut(b, k, 1)
		})
	}
	// 10,000 subscriptions spread over 1,000 channels, notifications
	// round-robin over the channels: each is delivered 10 times.
	b.Run("subs=10000/channels=1000", func(b *testing.B) {
		benchFanOut(b, 10000, 1000)
	})
}

func benchFanOut(b *testing.B, subs, channels int) {
	ctx := context.Background()
	bb, session := fakeBus(b)
	name := func(i int) string { return fmt.Sprint("bench", i%channels) }
	// Lossless, so that every delivery is read: the figures are those of
	// readers that keep up, and the Bus waits for the slowest.
	lossless := []bus.SubscribeOption{bus.WithOverflow(bus.OverflowBlock)}
	first, err := bb.Subscribe(ctx, []string{name(0)}, lossless...)
	if err != nil {
		b.Fatal(err)
	}
	sess := session()
	ss := []*bus.Subscription{first}
	for i := 1; i < subs; i++ {
		s, err := bb.Subscribe(ctx, []string{name(i)}, lossless...)
		if err != nil {
			b.Fatal(err)
		}
		ss = append(ss, s)
	}
	perSub := b.N / channels // notifications each subscription gets
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		dropped, lagged int
	)
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for _, s := range ss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for got := 0; got < perSub; {
				ev, err := s.Next(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				got += len(ev.Notifications) + ev.Dropped
				if ev.Kind == pgnotify.Lagged {
					mu.Lock()
					dropped += ev.Dropped
					lagged++
					mu.Unlock()
				}
			}
		}()
	}
	sent := make(chan error, 1)
	go func() {
		if channels == 1 {
			sent <- sess.NotifyN(name(0), b.N, func(int) string { return payload64 })
			return
		}
		// One write per round over the channels, as a server sends a
		// burst of commits.
		round := make([]pgproto3.BackendMessage, channels)
		for i := range round {
			round[i] = &pgproto3.NotificationResponse{PID: fakepg.NotifierPID, Channel: name(i), Payload: payload64}
		}
		for range b.N / channels {
			if err := sess.Send(round...); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	wg.Wait()
	b.StopTimer()
	cpu := cpuTime() - cpu0
	if err := <-sent; err != nil {
		b.Fatal(err)
	}
	deliveries := float64(perSub) * float64(subs)
	if deliveries > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/deliveries, "ns/delivery")
		b.ReportMetric(float64(cpu.Nanoseconds())/deliveries, "cpu-ns/delivery")
		if dropped > 0 {
			b.Errorf("%d dropped in %d Lagged events under OverflowBlock", dropped, lagged)
		}
	}
	for _, s := range ss {
		s.Close()
	}
}

// BenchmarkIdleSubscription measures the heap an idle subscription
// holds: 10,000 subscriptions on one channel, none read.
func BenchmarkIdleSubscription(b *testing.B) {
	ctx := context.Background()
	for range b.N {
		b.StopTimer()
		bb, session := fakeBus(b)
		first, err := bb.Subscribe(ctx, []string{"idle"})
		if err != nil {
			b.Fatal(err)
		}
		session()
		const n = 10000
		ss := make([]*bus.Subscription, 0, n)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		b.StartTimer()
		for range n {
			s, err := bb.Subscribe(ctx, []string{"idle"})
			if err != nil {
				b.Fatal(err)
			}
			ss = append(ss, s)
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/subscription")
		for _, s := range ss {
			s.Close()
		}
		first.Close()
		bb.Close(ctx)
	}
}

// BenchmarkSubscribeClose measures subscribe + close churn: on a channel
// another subscription keeps listened (no round trip), and on a new
// channel each time (a LISTEN and an UNLISTEN round trip, to a fake server
// on loopback).
func BenchmarkSubscribeClose(b *testing.B) {
	ctx := context.Background()
	for _, mode := range []string{"listened", "new"} {
		b.Run(mode, func(b *testing.B) {
			bb, session := fakeBus(b)
			keep, err := bb.Subscribe(ctx, []string{"kept"})
			if err != nil {
				b.Fatal(err)
			}
			defer keep.Close()
			session()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				ch := "kept"
				if mode == "new" {
					ch = fmt.Sprint("new", i)
				}
				s, err := bb.Subscribe(ctx, []string{ch})
				if err != nil {
					b.Fatal(err)
				}
				s.Close()
			}
		})
	}
}
