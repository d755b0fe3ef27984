package pgnotify_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/fakepg"
)

// The hot path, waiter → ready queue → Next, against a fake server that
// streams 64-byte notifications from another goroutine. One op is one
// notification, so allocs/op are allocations per notification (pgx's own
// decode makes 4 of them). bench/ compares implementations in one run.

var payload64 = strings.Repeat("p", 64)

// streamingConn returns a client connection to a fake session, and the
// session, which streams when asked.
func streamingConn(b *testing.B) (*pgx.Conn, *fakepg.Conn) {
	b.Helper()
	srv, err := fakepg.Listen()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, srv.ConnString())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close(ctx) })
	sess, err := srv.NextConn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := pgnotify.Listen(ctx, conn, "bench"); err != nil {
		b.Fatal(err)
	}
	return conn, sess
}

// stream sends n notifications from another goroutine.
func stream(b *testing.B, sess *fakepg.Conn, n int) <-chan error {
	done := make(chan error, 1)
	go func() { done <- sess.NotifyN("bench", n, func(int) string { return payload64 }) }()
	return done
}

func BenchmarkManagerNext(b *testing.B) {
	conn, sess := streamingConn(b)
	ctx := context.Background()
	m := pgnotify.NewManager()
	defer m.Close(ctx)
	if err := m.Add(ctx, conn); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	done := stream(b, sess, b.N)
	batches := 0
	for got := 0; got < b.N; {
		ev, err := m.Next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		got += len(ev.Notifications)
		batches++
	}
	b.StopTimer()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/float64(batches), "notifications/batch")
}

func BenchmarkWait(b *testing.B) {
	conn, sess := streamingConn(b)
	b.ReportAllocs()
	b.ResetTimer()
	done := stream(b, sess, b.N)
	got := 0
	for _, err := range pgnotify.Wait(context.Background(), conn, pgnotify.NoTimeout) {
		if err != nil {
			b.Fatal(err)
		}
		if got++; got == b.N {
			break
		}
	}
	b.StopTimer()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRawPgx is the floor pgnotify builds on: pgx's own loop with
// context.Background(), which sets up no context watcher.
func BenchmarkRawPgx(b *testing.B) {
	conn, sess := streamingConn(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	done := stream(b, sess, b.N)
	for range b.N {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
