package pgtest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/pgtest"
)

// A test that listens on a server of its own. In your own test, the body of
// the func is the body of func TestX(t *testing.T).
func Example() {
	runTest(func(t testing.TB) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		url := pgtest.Start(t) // stopped when the test ends

		listener, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer listener.Close(ctx)
		if err := pgnotify.Listen(ctx, listener, "jobs"); err != nil {
			t.Fatal(err)
		}
		sender, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer sender.Close(ctx)
		if err := pgnotify.Notify(ctx, sender, pgnotify.Message{Channel: "jobs", Payload: "job 1"}); err != nil {
			t.Fatal(err)
		}

		n, err := listener.WaitForNotification(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println(n.Channel, n.Payload)
	})
	// Output: jobs job 1
}

// A test of what a client does when its connection is cut, and when the
// network goes silent. Each connection that should break on its own gets its
// own Proxy.
func ExampleProxy() {
	runTest(func(t testing.TB) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		p := pgtest.NewProxy(t, pgtest.Start(t))

		conn, err := pgx.Connect(ctx, p.ConnString())
		if err != nil {
			t.Fatal(err)
		}
		p.Cut()
		err = conn.Ping(ctx)
		fmt.Println("after Cut, the connection is closed:", err != nil && conn.IsClosed())

		// The proxy still accepts: a client that reconnects gets through.
		conn, err = pgx.Connect(ctx, p.ConnString())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)

		// A blackhole answers nothing: only a deadline finds it.
		p.Blackhole()
		pingCtx, cancelPing := context.WithTimeout(ctx, 200*time.Millisecond)
		err = conn.Ping(pingCtx)
		cancelPing()
		fmt.Println("in a blackhole, the ping times out:", pgconn.Timeout(err))

		// Once it is over, new connections get through again.
		p.Resume()
		again, err := pgx.Connect(ctx, p.ConnString())
		if err != nil {
			t.Fatal(err)
		}
		defer again.Close(ctx)
		fmt.Println("after Resume, a new connection works:", again.Ping(ctx) == nil)
	})
	// Output:
	// after Cut, the connection is closed: true
	// in a blackhole, the ping times out: true
	// after Resume, a new connection works: true
}
