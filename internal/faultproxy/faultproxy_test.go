package faultproxy_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed-c59d106d/pgnotify/internal/fakepg"
	"github.com/seed-c59d106d/pgnotify/internal/faultproxy"
)

// TestMain checks that no goroutine outlives the tests: Proxy.Close
// promises to wait for all of its own.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testServer is a loopback TCP server that runs serve on each connection.
type testServer struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

// startServer starts a test server; stop closes it and waits for its
// goroutines, and runs when the test ends if the test has not called it.
func startServer(t testing.TB, serve func(net.Conn)) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &testServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ln.Close()
			s.mu.Lock()
			for _, c := range s.conns {
				c.Close()
			}
			s.mu.Unlock()
			s.wg.Wait()
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// echo writes back everything it reads.
func echo(c net.Conn) { _, _ = io.Copy(c, c) }

// newProxy starts a proxy to target, closed when the test ends.
func newProxy(t testing.TB, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, p.Close()) })
	return p
}

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dial connects to the proxy and returns the client socket and its link.
func dial(t testing.TB, p *faultproxy.Proxy) (net.Conn, *faultproxy.Link) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	l, err := p.NextLink(testContext(t))
	require.NoError(t, err)
	require.Equal(t, c.LocalAddr().String(), l.ClientAddr().String())
	require.Equal(t, l, p.LinkFor(c.LocalAddr()))
	return c, l
}

// roundTrip writes msg and reads back as many bytes, with a deadline.
func roundTrip(t testing.TB, c net.Conn, msg string) {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	got := make([]byte, len(msg))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	require.Equal(t, msg, string(got))
	require.NoError(t, c.SetDeadline(time.Time{}))
}

// readEOF reads from c until EOF, failing on data, another error, or no
// EOF within 5 s.
func readEOF(t testing.TB, c net.Conn) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err := c.Read(make([]byte, 16))
	assert.Zero(t, n)
	assert.ErrorIs(t, err, io.EOF)
}

// isTimeout reports whether err is a net.Error timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestForwarding(t *testing.T) {
	target, _ := startServer(t, echo)
	p := newProxy(t, target)
	c1, l1 := dial(t, p)
	c2, l2 := dial(t, p)

	roundTrip(t, c1, "hello")
	roundTrip(t, c2, "world")
	roundTrip(t, c1, string(make([]byte, 1<<20))) // larger than the copy buffers
	assert.Equal(t, []*faultproxy.Link{l1, l2}, p.Links())
}

func TestCut(t *testing.T) {
	target, _ := startServer(t, echo)
	p := newProxy(t, target)
	c, l := dial(t, p)
	other, _ := dial(t, p)
	roundTrip(t, c, "hello")

	start := time.Now()
	l.Cut()
	readEOF(t, c)
	assert.Less(t, time.Since(start), time.Second)
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the link did not end")
	}
	roundTrip(t, other, "still here")
	assert.Len(t, p.Links(), 1)
}

func TestBlackhole(t *testing.T) {
	target, _ := startServer(t, echo)
	p := newProxy(t, target)
	c, l := dial(t, p)
	roundTrip(t, c, "hello")

	l.Blackhole()
	_, err := c.Write([]byte("ping"))
	require.NoError(t, err, "a write into a blackhole succeeds")
	require.NoError(t, c.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	n, err := c.Read(make([]byte, 16))
	assert.Zero(t, n)
	assert.True(t, isTimeout(err), "want a timeout, got %v", err)

	// Resume delivers what was held back.
	l.Resume()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	got := make([]byte, 4)
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	assert.Equal(t, "ping", string(got))
	roundTrip(t, c, "again")
}

func TestServerCloseReachesClientInOrder(t *testing.T) {
	target, _ := startServer(t, func(c net.Conn) {
		_, _ = c.Write([]byte("bye"))
	})
	p := newProxy(t, target)
	c, _ := dial(t, p)
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, "bye", string(got))
}

func TestBlackholeHoldsBackClose(t *testing.T) {
	// The server writes and closes when the test says so, and reports when
	// it has done it.
	release, finished := make(chan struct{}), make(chan struct{})
	target, _ := startServer(t, func(c net.Conn) {
		defer close(finished)
		<-release
		_, _ = c.Write([]byte("bye"))
	})
	t.Cleanup(func() { // runs before the server's stop, which waits for the handler
		select {
		case <-release:
		default:
			close(release)
		}
	})
	p := newProxy(t, target)
	c, l := dial(t, p)

	l.Blackhole()
	close(release)
	<-finished
	require.NoError(t, c.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
	n, err := c.Read(make([]byte, 16))
	assert.Zero(t, n)
	assert.True(t, isTimeout(err), "neither data nor the close may pass; got %v", err)

	l.Resume()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	got, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, "bye", string(got))
}

func TestBlackholeAllAndCutAll(t *testing.T) {
	target, _ := startServer(t, echo)
	p := newProxy(t, target)
	c1, _ := dial(t, p)
	c2, _ := dial(t, p)

	p.BlackholeAll()
	for _, c := range []net.Conn{c1, c2} {
		_, err := c.Write([]byte("x"))
		require.NoError(t, err)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
		_, err = c.Read(make([]byte, 1))
		assert.True(t, isTimeout(err), "want a timeout, got %v", err)
	}
	p.ResumeAll()
	for _, c := range []net.Conn{c1, c2} {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		b := make([]byte, 1)
		_, err := io.ReadFull(c, b)
		require.NoError(t, err)
		assert.Equal(t, "x", string(b))
	}

	p.BlackholeAll()
	p.CutAll() // a cut ends a blackholed link too
	readEOF(t, c1)
	readEOF(t, c2)
}

// TestPartitionAndHeal: a partition holds back the live links and the links
// made during it, from their first byte; Heal delivers what was held back.
func TestPartitionAndHeal(t *testing.T) {
	target, _ := startServer(t, echo)
	p := newProxy(t, target)
	before, _ := dial(t, p)

	p.Partition()
	during, _ := dial(t, p)
	for _, c := range []net.Conn{before, during} {
		_, err := c.Write([]byte("x"))
		require.NoError(t, err)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
		_, err = c.Read(make([]byte, 1))
		assert.True(t, isTimeout(err), "want a timeout, got %v", err)
	}

	p.Heal()
	for _, c := range []net.Conn{before, during} {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
		b := make([]byte, 1)
		_, err := io.ReadFull(c, b)
		require.NoError(t, err)
		assert.Equal(t, "x", string(b))
	}
	after, _ := dial(t, p)
	roundTrip(t, after, "y")
}

func TestTargetDown(t *testing.T) {
	target, stop := startServer(t, echo)
	stop()
	p := newProxy(t, target)
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	readEOF(t, c)

	ctx, cancel := context.WithTimeout(testContext(t), 50*time.Millisecond)
	defer cancel()
	_, err = p.NextLink(ctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestConnString(t *testing.T) {
	target, _ := startServer(t, echo)
	p := newProxy(t, target)
	assert.Equal(t, "postgres://u:pw@"+p.Addr()+"/db?sslmode=disable",
		p.ConnString("postgres://u:pw@db.example:5432/db?sslmode=disable"))
	_, port, err := net.SplitHostPort(p.Addr())
	require.NoError(t, err)
	assert.Equal(t, "dbname=db host=elsewhere port=5432 host=127.0.0.1 port="+port,
		p.ConnString("dbname=db host=elsewhere port=5432"))
}

func TestCloseLeavesNoGoroutine(t *testing.T) {
	target, stopServer := startServer(t, echo)
	p, err := faultproxy.New(target)
	require.NoError(t, err)
	c1, _ := dial(t, p)
	c2, l2 := dial(t, p)
	roundTrip(t, c1, "hello")
	l2.Blackhole()
	_, err = c2.Write([]byte("held"))
	require.NoError(t, err)

	require.NoError(t, p.Close())
	require.NoError(t, p.Close(), "Close twice")
	readEOF(t, c1)
	_, err = p.NextLink(testContext(t))
	assert.ErrorIs(t, err, faultproxy.ErrProxyClosed)
	assert.Empty(t, p.Links())

	stopServer()
	goleak.VerifyNone(t)
}

// TestPgxThroughProxy checks what pgx makes of a cut and a blackhole, with
// the fake server as the target.
func TestPgxThroughProxy(t *testing.T) {
	srv, err := fakepg.Listen()
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, srv.Close()) })
	p := newProxy(t, srv.Addr())
	ctx := testContext(t)

	connect := func() (*pgx.Conn, *faultproxy.Link, *fakepg.Conn) {
		conn, err := pgx.Connect(ctx, p.ConnString(srv.ConnString()))
		require.NoError(t, err)
		t.Cleanup(func() {
			conn.Close(context.Background())
			<-conn.PgConn().CleanupDone()
		})
		// Not NextLink: the cancel request pgx sent when the previous
		// subtest's connection broke came through the proxy as a link too.
		l := p.LinkFor(conn.PgConn().Conn().LocalAddr())
		require.NotNil(t, l)
		sess, err := srv.NextConn(ctx)
		require.NoError(t, err)
		return conn, l, sess
	}

	t.Run("cut", func(t *testing.T) {
		conn, l, sess := connect()
		require.NoError(t, sess.Notify("ch", "through"))
		n, err := conn.WaitForNotification(ctx)
		require.NoError(t, err)
		assert.Equal(t, "through", n.Payload)

		l.Cut()
		_, err = conn.WaitForNotification(ctx)
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
		assert.True(t, conn.IsClosed())
	})

	t.Run("reset passes through", func(t *testing.T) {
		conn, l, sess := connect()
		require.NoError(t, sess.CloseAbrupt())
		_, err := conn.WaitForNotification(ctx)
		assert.ErrorIs(t, err, syscall.ECONNRESET)
		assert.True(t, conn.IsClosed())
		select {
		case <-l.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("the link did not end")
		}
	})

	t.Run("blackhole", func(t *testing.T) {
		conn, l, _ := connect()
		l.Blackhole()
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := conn.Ping(short)
		cancel()
		assert.True(t, pgconn.Timeout(err), "want a timeout, got %T: %v", err, err)
		assert.True(t, conn.IsClosed(), "pgx closes a connection whose query timed out")
		// pgx's background close sends Terminate and then waits (up to
		// 15 s) for the server to close; through a blackhole it never
		// does, so the test cuts the link.
		select {
		case <-conn.PgConn().CleanupDone():
			t.Fatal("pgx finished closing through a blackhole")
		default:
		}
		l.Cut()
		select {
		case <-conn.PgConn().CleanupDone():
		case <-time.After(5 * time.Second):
			t.Fatal("pgx did not finish closing after the cut")
		}
	})
}
