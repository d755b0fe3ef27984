package fakepg_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/fakepg"
)

// TestMain checks that no goroutine outlives the tests: Server.Close
// promises to wait for all of its own, and each test waits for pgx's
// background close (CleanupDone) of every connection it opened.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testContext returns a context that ends with the test or after 10 s.
func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startServer starts a fake server that is closed when the test ends.
func startServer(t testing.TB) *fakepg.Server {
	t.Helper()
	srv, err := fakepg.Listen()
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, srv.Close()) })
	return srv
}

// connect connects pgx to srv and returns the client and the server's side
// of the session. The client is closed when the test ends, and the test
// waits for pgx to finish closing it.
func connect(t testing.TB, srv *fakepg.Server, connString string) (*pgx.Conn, *fakepg.Conn) {
	t.Helper()
	ctx := testContext(t)
	conn, err := pgx.Connect(ctx, connString)
	require.NoError(t, err)
	t.Cleanup(func() { closeConn(t, conn) })
	sess, err := srv.NextConn(ctx)
	require.NoError(t, err)
	require.Equal(t, conn.PgConn().PID(), sess.PID(), "NextConn returned another session")
	return conn, sess
}

// closeConn closes conn and waits for pgx's background cleanup.
func closeConn(t testing.TB, conn *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
	select {
	case <-conn.PgConn().CleanupDone():
	case <-ctx.Done():
		t.Errorf("pgx did not finish closing the connection: %v", ctx.Err())
	}
}

// waitDone waits for the server's side of a session to end.
func waitDone(t testing.TB, sess *fakepg.Conn) {
	t.Helper()
	select {
	case <-sess.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the fake session did not end")
	}
}

// waitCleanup waits for pgx to finish closing a connection that a fault closed.
func waitCleanup(t testing.TB, conn *pgx.Conn) {
	t.Helper()
	select {
	case <-conn.PgConn().CleanupDone():
	case <-time.After(5 * time.Second):
		t.Fatal("pgx did not finish closing the connection")
	}
}

func TestConnect(t *testing.T) {
	srv := startServer(t)
	conn1, sess1 := connect(t, srv, srv.ConnString())
	conn2, sess2 := connect(t, srv, srv.ConnString())

	assert.Equal(t, uint32(1000), sess1.PID())
	assert.Equal(t, uint32(1001), sess2.PID())
	assert.Equal(t, "15.0", conn1.PgConn().ParameterStatus("server_version"))
	assert.Equal(t, "UTC", conn2.PgConn().ParameterStatus("TimeZone"))
	assert.Equal(t, []*fakepg.Conn{sess1, sess2}, srv.Conns())
	assert.Equal(t, "postgres://fake@"+srv.Addr()+"/fake?sslmode=disable", srv.ConnString())

	// A session is listed as soon as its client's Connect returns.
	conn3, err := pgx.Connect(testContext(t), srv.ConnString())
	require.NoError(t, err)
	t.Cleanup(func() { closeConn(t, conn3) })
	conns := srv.Conns()
	require.Len(t, conns, 3)
	assert.Equal(t, conn3.PgConn().PID(), conns[2].PID())
}

func TestConnectSSLPreferFallsBack(t *testing.T) {
	srv := startServer(t)
	conn, _ := connect(t, srv, "postgres://fake@"+srv.Addr()+"/fake?sslmode=prefer")
	require.NoError(t, conn.Ping(testContext(t)))
}

func TestGSSEncRequestRefused(t *testing.T) {
	srv := startServer(t)
	nc, err := net.Dial("tcp", srv.Addr())
	require.NoError(t, err)
	defer nc.Close()
	req, err := (&pgproto3.GSSEncRequest{}).Encode(nil)
	require.NoError(t, err)
	_, err = nc.Write(req)
	require.NoError(t, err)
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(5*time.Second)))
	b := make([]byte, 1)
	_, err = nc.Read(b)
	require.NoError(t, err)
	assert.Equal(t, byte('N'), b[0])
}

func TestCancelRequestAccepted(t *testing.T) {
	srv := startServer(t)
	conn, _ := connect(t, srv, srv.ConnString())
	require.NoError(t, conn.PgConn().CancelRequest(testContext(t)))
	require.NoError(t, conn.Ping(testContext(t)))
}

func TestPing(t *testing.T) {
	srv := startServer(t)
	conn, _ := connect(t, srv, srv.ConnString())
	ctx := testContext(t)
	require.NoError(t, conn.PgConn().Ping(ctx))
	require.NoError(t, conn.Ping(ctx))
	results, err := conn.PgConn().Exec(ctx, "-- ping").ReadAll()
	require.NoError(t, err)
	require.Len(t, results, 1)
	assert.Empty(t, results[0].CommandTag.String())
}

func TestListenAndListeningChannels(t *testing.T) {
	srv := startServer(t)
	conn, sess := connect(t, srv, srv.ConnString())
	ctx := testContext(t)

	_, err := conn.PgConn().Exec(ctx, `LISTEN "a"; LISTEN "b"`).ReadAll()
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, sess.Channels())

	rows, err := conn.Query(ctx, "SELECT pg_listening_channels()", pgx.QueryExecModeSimpleProtocol)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, got)

	// Quoted names keep case, spaces, semicolons and doubled quotes;
	// unquoted ones fold to lower case.
	_, err = conn.PgConn().Exec(ctx, `UNLISTEN "a"; LISTEN "Semi; ""Q"""; LISTEN Folded`).ReadAll()
	require.NoError(t, err)
	assert.Equal(t, []string{`Semi; "Q"`, "b", "folded"}, sess.Channels())

	_, err = conn.PgConn().Exec(ctx, "UNLISTEN *").ReadAll()
	require.NoError(t, err)
	assert.Equal(t, []string{}, sess.Channels())
}

func TestFailedQueryChangesNothing(t *testing.T) {
	srv := startServer(t)
	conn, sess := connect(t, srv, srv.ConnString())
	ctx := testContext(t)

	_, err := conn.PgConn().Exec(ctx, `LISTEN "x"; LISTEN`).ReadAll()
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	assert.Equal(t, "42601", pgErr.Code)
	assert.False(t, conn.IsClosed())
	assert.Equal(t, []string{}, sess.Channels())
	require.NoError(t, conn.Ping(ctx))
}

func TestPgnotifyHelpers(t *testing.T) {
	srv := startServer(t)
	conn, sess := connect(t, srv, srv.ConnString())
	ctx := testContext(t)

	got, err := pgnotify.ListeningChannels(ctx, conn)
	require.NoError(t, err)
	assert.Equal(t, []string{}, got)

	require.NoError(t, pgnotify.Listen(ctx, conn, "Foo", `we"ird; name`, "bar", "Foo"))
	got, err = pgnotify.ListeningChannels(ctx, conn)
	require.NoError(t, err)
	assert.Equal(t, []string{"Foo", "bar", `we"ird; name`}, got)
	assert.Equal(t, got, sess.Channels())

	require.NoError(t, pgnotify.Unlisten(ctx, conn, "bar"))
	got, err = pgnotify.ListeningChannels(ctx, conn)
	require.NoError(t, err)
	assert.Equal(t, []string{"Foo", `we"ird; name`}, got)

	require.NoError(t, pgnotify.UnlistenAll(ctx, conn))
	got, err = pgnotify.ListeningChannels(ctx, conn)
	require.NoError(t, err)
	assert.Equal(t, []string{}, got)
}

func TestSimpleQueries(t *testing.T) {
	srv := startServer(t)
	conn, _ := connect(t, srv, srv.ConnString())
	ctx := testContext(t)

	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol).Scan(&n))
	assert.Equal(t, 1, n)

	tag, err := conn.Exec(ctx, "SET application_name = 'x'") // no arguments: pgx uses the simple protocol
	require.NoError(t, err)
	assert.Equal(t, "SET", tag.String())

	results, err := conn.PgConn().Exec(ctx, "/* a; /* nested */ comment */ SELECT 1; -- trailing; comment\n").ReadAll()
	require.NoError(t, err)
	require.Len(t, results, 1)
	assert.Equal(t, "SELECT 1", results[0].CommandTag.String())
}

func TestExtendedProtocolRefused(t *testing.T) {
	srv := startServer(t)
	conn, _ := connect(t, srv, srv.ConnString())
	ctx := testContext(t)

	var n int
	err := conn.QueryRow(ctx, "SELECT $1::int", 1).Scan(&n)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	assert.Equal(t, "0A000", pgErr.Code)
	assert.False(t, conn.IsClosed())
	require.NoError(t, conn.Ping(ctx), "the session must be usable after the refusal")
}

func TestWaitForNotification(t *testing.T) {
	srv := startServer(t)
	conn, sess := connect(t, srv, srv.ConnString())
	ctx := testContext(t)

	require.NoError(t, sess.Notify("jobs", "42"))
	n, err := conn.WaitForNotification(ctx)
	require.NoError(t, err)
	assert.Equal(t, &pgconn.Notification{PID: fakepg.NotifierPID, Channel: "jobs", Payload: "42"}, n)
}

func TestNotifyN(t *testing.T) {
	srv := startServer(t)
	conn, sess := connect(t, srv, srv.ConnString())
	ctx := testContext(t)

	const count = 20000 // several 64 KiB chunks
	errc := make(chan error, 1)
	go func() { errc <- sess.NotifyN("bulk", count, strconv.Itoa) }()
	for i := range count {
		n, err := conn.WaitForNotification(ctx)
		require.NoError(t, err)
		require.Equal(t, strconv.Itoa(i), n.Payload)
		require.Equal(t, "bulk", n.Channel)
	}
	require.NoError(t, <-errc)
}

func TestNotifyStatement(t *testing.T) {
	srv := startServer(t)
	listener, _ := connect(t, srv, srv.ConnString())
	sender, senderSess := connect(t, srv, srv.ConnString())
	ctx := testContext(t)

	require.NoError(t, pgnotify.Listen(ctx, listener, "ch"))
	require.NoError(t, pgnotify.Listen(ctx, sender, "ch"))
	_, err := sender.Exec(ctx, `NOTIFY ch, 'it''s'; NOTIFY other`)
	require.NoError(t, err)

	want := &pgconn.Notification{PID: senderSess.PID(), Channel: "ch", Payload: "it's"}
	n, err := listener.WaitForNotification(ctx)
	require.NoError(t, err)
	assert.Equal(t, want, n)
	// The sender's own copy came before its ReadyForQuery: pgx has it buffered.
	n, err = sender.WaitForNotification(ctx)
	require.NoError(t, err)
	assert.Equal(t, want, n)
}

func TestOnQuery(t *testing.T) {
	srv := startServer(t)
	conn, sess := connect(t, srv, srv.ConnString())
	ctx := testContext(t)

	sess.OnQuery(func(sql string) bool {
		if sql != "-- ping" {
			return false
		}
		assert.NoError(t, sess.SendFatal("57P01", "terminating connection due to administrator command"))
		return true
	})
	require.NoError(t, pgnotify.Listen(ctx, conn, "a"), "other queries are answered as usual")
	err := conn.Ping(ctx)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	assert.Equal(t, "57P01", pgErr.Code)
	assert.True(t, conn.IsClosed())
	waitCleanup(t, conn)
	waitDone(t, sess)
}

// TestFaultsCloseTheConnection checks, for each fault that ends a
// connection, what pgx's WaitForNotification returns and that pgx closes
// the connection: pgconn closes on any read error but a timeout.
func TestFaultsCloseTheConnection(t *testing.T) {
	tests := []struct {
		name   string
		inject func(*fakepg.Conn) error
		check  func(t *testing.T, err error)
	}{
		{
			name:   "malformed",
			inject: (*fakepg.Conn).SendMalformed,
			check: func(t *testing.T, err error) {
				assert.EqualError(t, err, "unknown message type: !")
			},
		},
		{
			name:   "oversized",
			inject: (*fakepg.Conn).SendOversized,
			check: func(t *testing.T, err error) {
				var lenErr *pgproto3.ExceededMaxBodyLenErr
				require.ErrorAs(t, err, &lenErr)
				assert.Equal(t, 0x7fffffff-4, lenErr.ActualBodyLen)
			},
		},
		{
			name: "fatal",
			inject: func(c *fakepg.Conn) error {
				return c.SendFatal("57P01", "terminating connection due to administrator command")
			},
			check: func(t *testing.T, err error) {
				var pgErr *pgconn.PgError
				require.ErrorAs(t, err, &pgErr)
				assert.Equal(t, "57P01", pgErr.Code)
				assert.Equal(t, "FATAL", pgErr.Severity)
			},
		},
		{
			name:   "abrupt close",
			inject: (*fakepg.Conn).CloseAbrupt,
			check: func(t *testing.T, err error) {
				assert.ErrorIs(t, err, syscall.ECONNRESET)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t)
			conn, sess := connect(t, srv, srv.ConnString())
			ctx := testContext(t)

			require.NoError(t, sess.Notify("before", "1"))
			require.NoError(t, tt.inject(sess))
			n, err := conn.WaitForNotification(ctx)
			require.NoError(t, err, "a notification sent before the fault is received")
			assert.Equal(t, "before", n.Channel)

			n, err = conn.WaitForNotification(ctx)
			assert.Nil(t, n)
			require.Error(t, err)
			t.Logf("%T: %v", err, err)
			tt.check(t, err)
			assert.False(t, pgconn.Timeout(err))
			assert.True(t, conn.IsClosed())
			waitCleanup(t, conn)
			waitDone(t, sess)
			assert.ErrorIs(t, sess.Notify("after", ""), fakepg.ErrConnClosed)
		})
	}
}

func TestHalfThenStall(t *testing.T) {
	srv := startServer(t)
	conn, sess := connect(t, srv, srv.ConnString())
	ctx := testContext(t)

	require.NoError(t, sess.SendHalfThenStall("ch", "a payload long enough to split"))
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	n, err := conn.WaitForNotification(short)
	cancel()
	assert.Nil(t, n)
	require.Error(t, err)
	assert.True(t, pgconn.Timeout(err), "want a timeout, got %T: %v", err, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.False(t, conn.IsClosed(), "a timed-out read must not close the connection")
	assert.ErrorIs(t, sess.Notify("x", ""), fakepg.ErrStalled)

	// A query sent while the frame is stalled is answered after it.
	pingErr := make(chan error, 1)
	go func() { pingErr <- conn.PgConn().Ping(ctx) }()
	require.NoError(t, sess.ResumeStalled())
	require.NoError(t, <-pingErr)
	assert.ErrorIs(t, sess.ResumeStalled(), fakepg.ErrNotStalled)

	n, err = conn.WaitForNotification(ctx)
	require.NoError(t, err)
	assert.Equal(t, &pgconn.Notification{PID: fakepg.NotifierPID, Channel: "ch", Payload: "a payload long enough to split"}, n)
}

func TestSilence(t *testing.T) {
	srv := startServer(t)
	waiter, waiterSess := connect(t, srv, srv.ConnString())
	pinger, pingerSess := connect(t, srv, srv.ConnString())
	ctx := testContext(t)

	waiterSess.Silence()
	pingerSess.Silence()
	assert.ErrorIs(t, waiterSess.Notify("x", ""), fakepg.ErrSilenced)

	// A wait on a silent peer times out and leaves the connection open.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := waiter.WaitForNotification(short)
	cancel()
	assert.True(t, pgconn.Timeout(err), "want a timeout, got %T: %v", err, err)
	assert.False(t, waiter.IsClosed())

	// A ping's write succeeds, its answer never comes, and pgx closes a
	// connection whose query was cancelled.
	short, cancel = context.WithTimeout(ctx, 200*time.Millisecond)
	err = pinger.PgConn().Ping(short)
	cancel()
	assert.True(t, pgconn.Timeout(err), "want a timeout, got %T: %v", err, err)
	assert.True(t, pinger.IsClosed())
	waitCleanup(t, pinger)
	waitDone(t, pingerSess)
}

func TestServerClose(t *testing.T) {
	srv, err := fakepg.Listen()
	require.NoError(t, err)
	ctx := testContext(t)
	conn, err := pgx.Connect(ctx, srv.ConnString())
	require.NoError(t, err)
	sess, err := srv.NextConn(ctx)
	require.NoError(t, err)

	require.NoError(t, srv.Close())
	require.NoError(t, srv.Close(), "Close twice")
	waitDone(t, sess)
	_, err = conn.WaitForNotification(ctx)
	require.Error(t, err)
	assert.True(t, conn.IsClosed())
	waitCleanup(t, conn)
	_, err = srv.NextConn(ctx)
	assert.ErrorIs(t, err, fakepg.ErrServerClosed)
	assert.Empty(t, srv.Conns())
}

func TestNextConnContext(t *testing.T) {
	srv := startServer(t)
	ctx, cancel := context.WithTimeout(testContext(t), 50*time.Millisecond)
	defer cancel()
	_, err := srv.NextConn(ctx)
	assert.True(t, errors.Is(err, context.DeadlineExceeded))
}
