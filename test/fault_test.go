package pgnotifytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/internal/fakepg"
)

// deliverThenFault sends n notifications to victim's channel, makes victim
// receive them (a drain pass), injects the fault, and returns the Dead
// event, the time from the fault to it, and what victim delivered.
func deliverThenFault(t *testing.T, ctx context.Context, m *pgnotify.Manager, victim *pgx.Conn, send func(n int), n int, fault func()) (pgnotify.Event, time.Duration, int) {
	t.Helper()
	send(n)
	got, other := drainPayloads(t, ctx, m)
	require.Empty(t, other)
	delivered := len(got[victim])
	m.SetTimeout(pgnotify.NoTimeout)
	start := time.Now()
	fault()
	for {
		ev := next(t, ctx, m)
		switch ev.Kind {
		case pgnotify.Dead:
			return ev, time.Since(start), delivered
		case pgnotify.Batch:
			delivered += len(ev.Notifications)
		}
	}
}

func TestFaultBlackholeFoundByHealthCheck(t *testing.T) {
	ctx := testContext(t)
	const every, timeout = 200 * time.Millisecond, 300 * time.Millisecond
	victim, p := behindProxy(t, "bh")
	other := listener(t, "bh")
	m := newManager(t, pgnotify.WithHealthCheck(every, timeout))
	require.NoError(t, m.Add(ctx, victim, other))

	ev, took, delivered := deliverThenFault(t, ctx, m, victim, func(n int) { notify(t, "bh", seq("", n)...) }, 100, p.Blackhole)
	t.Logf("blackhole: Dead after %v (every %v + timeout %v); sent 100, delivered %d",
		took.Round(time.Millisecond), every, timeout, delivered)
	assert.Equal(t, victim, ev.Conn)
	assert.ErrorContains(t, ev.Err, "health check failed")
	// Quiet for at least every (at most twice every), then the timeout.
	assert.Less(t, took, 2*every+timeout+time.Second)
	assert.Equal(t, 100, delivered)
	notify(t, "bh", "after")
	got, _ := drainPayloads(t, ctx, m)
	assert.Equal(t, map[*pgx.Conn][]string{other: {"after"}}, got)
}

func TestFaultCutIsDeadPromptly(t *testing.T) {
	ctx := testContext(t)
	victim, p := behindProxy(t, "cut")
	other := listener(t, "cut")
	m := newManager(t)
	require.NoError(t, m.Add(ctx, victim, other))

	ev, took, delivered := deliverThenFault(t, ctx, m, victim, func(n int) { notify(t, "cut", seq("", n)...) }, 100, p.Cut)
	t.Logf("cut: Dead after %v; sent 100, delivered %d", took.Round(time.Microsecond), delivered)
	assert.Equal(t, victim, ev.Conn)
	assert.True(t, errors.Is(ev.Err, io.ErrUnexpectedEOF) || errors.Is(ev.Err, syscall.ECONNRESET), "%v", ev.Err)
	assert.Less(t, took, time.Second)
	assert.Equal(t, 100, delivered)
	assert.Equal(t, "network", causeOf(m))
	assert.Equal(t, []*pgx.Conn{other}, m.Conns())
}

// fakeMember connects to srv, listens on "f" and returns the client and
// the server's session.
func fakeMember(t testing.TB, srv *fakepg.Server) (*pgx.Conn, *fakepg.Conn) {
	t.Helper()
	ctx := testContext(t)
	c, err := pgx.Connect(ctx, srv.ConnString())
	require.NoError(t, err)
	t.Cleanup(func() {
		closeManagers(t)
		closeConn(t, c)
	})
	sess, err := srv.NextConn(ctx)
	require.NoError(t, err)
	require.NoError(t, pgnotify.Listen(ctx, c, "f"))
	return c, sess
}

func TestFaultFakeServerFrames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(*fakepg.Conn) error
		check func(t *testing.T, err error)
	}{
		{"malformed frame", (*fakepg.Conn).SendMalformed, func(t *testing.T, err error) {
			assert.ErrorContains(t, err, "unknown message type")
		}},
		{"oversized length", (*fakepg.Conn).SendOversized, func(t *testing.T, err error) {
			var tooBig *pgproto3.ExceededMaxBodyLenErr
			assert.ErrorAs(t, err, &tooBig)
		}},
		{"FATAL error", func(c *fakepg.Conn) error { return c.SendFatal("57P01", "terminating connection") }, func(t *testing.T, err error) {
			var pgErr *pgconn.PgError
			require.ErrorAs(t, err, &pgErr)
			assert.Equal(t, "57P01", pgErr.Code)
		}},
		{"abrupt close", (*fakepg.Conn).CloseAbrupt, func(t *testing.T, err error) {
			assert.True(t, errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF), "%v", err)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testContext(t)
			srv, err := fakepg.Listen()
			require.NoError(t, err)
			t.Cleanup(func() { srv.Close() })
			victim, vs := fakeMember(t, srv)
			other, os := fakeMember(t, srv)
			m := newManager(t, pgnotify.WithTimeout(0))
			require.NoError(t, m.Add(ctx, victim, other))

			send := func(n int) { require.NoError(t, vs.NotifyN("f", n, func(i int) string { return fmt.Sprint(i) })) }
			ev, took, delivered := deliverThenFault(t, ctx, m, victim, send, 50, func() { require.NoError(t, tc.fault(vs)) })
			t.Logf("%s: Dead after %v: %v; sent 50, delivered %d", tc.name, took.Round(time.Microsecond), ev.Err, delivered)
			assert.Equal(t, victim, ev.Conn)
			tc.check(t, ev.Err)
			assert.Equal(t, 50, delivered)

			// The other member carries on untouched.
			require.NoError(t, os.Notify("f", "still here"))
			m.SetTimeout(pgnotify.NoTimeout)
			got := next(t, ctx, m)
			require.Equal(t, pgnotify.Batch, got.Kind)
			assert.Equal(t, other, got.Conn)
			assert.Equal(t, "still here", got.Notifications[0].Payload)
		})
	}
}

func TestFaultHalfFrameThenSilence(t *testing.T) {
	ctx := testContext(t)
	const every, timeout = 100 * time.Millisecond, 200 * time.Millisecond
	srv, err := fakepg.Listen()
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	victim, vs := fakeMember(t, srv)
	m := newManager(t, pgnotify.WithHealthCheck(every, timeout))
	require.NoError(t, m.Add(ctx, victim))

	// Half a frame, then nothing: the read waits on the rest, the quiet
	// timer runs out, and the ping (stuck behind the half frame) times out.
	start := time.Now()
	require.NoError(t, vs.SendHalfThenStall("f", "never whole"))
	ev := untilKind(t, ctx, m, pgnotify.Dead)
	took := time.Since(start)
	t.Logf("half frame then silence: Dead after %v: %v", took.Round(time.Millisecond), ev.Err)
	assert.ErrorContains(t, ev.Err, "health check failed")
	assert.Less(t, took, 2*every+timeout+time.Second)
	// pgx's background close waits for the server's goodbye, which the
	// stalled session never sends: end it.
	require.NoError(t, srv.Close())
}

func TestFaultHalfFrameResumedIsDelivered(t *testing.T) {
	ctx := testContext(t)
	srv, err := fakepg.Listen()
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	c, sess := fakeMember(t, srv)
	m := newManager(t)
	require.NoError(t, m.Add(ctx, c))
	require.NoError(t, sess.SendHalfThenStall("f", "whole at last"))
	// An interrupt while the frame is half read keeps the half (pgconn
	// keeps partial messages across a read timeout).
	require.NoError(t, m.Do(ctx, c, func(*pgx.Conn) error { return nil }))
	require.NoError(t, sess.ResumeStalled())
	ev := next(t, ctx, m)
	require.Equal(t, pgnotify.Batch, ev.Kind)
	assert.Equal(t, "whole at last", ev.Notifications[0].Payload)
}

func TestHealthPingResponseNotificationsDelivered(t *testing.T) {
	ctx := testContext(t)
	srv, err := fakepg.Listen()
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	c, sess := fakeMember(t, srv)
	// The server slips a notification in ahead of each health check's
	// answer.
	sess.OnQuery(func(sql string) bool {
		if strings.Contains(sql, "pg_notification_queue_usage()") {
			assert.NoError(t, sess.Send(&pgproto3.NotificationResponse{PID: 7, Channel: "f", Payload: "inside ping"}))
		}
		return false
	})
	m := newManager(t, pgnotify.WithHealthCheck(10*time.Millisecond, time.Second))
	require.NoError(t, m.Add(ctx, c))
	ev := next(t, ctx, m)
	require.Equal(t, pgnotify.Batch, ev.Kind)
	assert.Equal(t, "inside ping", ev.Notifications[0].Payload)
	assert.Positive(t, m.Stats().HealthChecks)
}

func TestRecoverRefusesHotStandby(t *testing.T) {
	ctx := testContext(t)
	m, old := deadMember(t, ctx, []string{"standby"})

	// The replacement answers LISTEN as a hot standby does.
	srv, err := fakepg.Listen()
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	var dialled *pgx.Conn
	dial := func(ctx context.Context, _ pgnotify.Garbage) (*pgx.Conn, error) {
		c, err := pgx.Connect(ctx, srv.ConnString())
		if err != nil {
			return nil, err
		}
		dialled = c
		sess, err := srv.NextConn(ctx)
		if err != nil {
			return nil, err
		}
		sess.OnQuery(func(sql string) bool {
			if len(sql) >= 6 && sql[:6] == "LISTEN" {
				assert.NoError(t, sess.Send(
					&pgproto3.ErrorResponse{Severity: "ERROR", Code: "25006", Message: "cannot execute LISTEN during recovery"},
					&pgproto3.ReadyForQuery{TxStatus: 'I'}))
				return true
			}
			return false
		})
		return c, nil
	}
	err = m.Recover(ctx, dial)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	assert.Equal(t, "25006", pgErr.Code)
	require.Len(t, m.Garbage(), 1, "a refused replacement leaves the dead connection in garbage")
	assert.Equal(t, old, m.Garbage()[0].Conn)
	assert.True(t, dialled.IsClosed(), "the standby connection is closed")
	receive(t, dialled.PgConn().CleanupDone(), "the standby connection's cleanup")
}

// A notification followed, in the same read, by half a frame or by a
// message that is not a notification is yielded at once: the waiter never
// holds what it read while it waits for more.
func TestBurstNeverHoldsBackWhatWasRead(t *testing.T) {
	for name, after := range map[string]func(*fakepg.Conn) error{
		"half frame": func(s *fakepg.Conn) error { return s.SendHalfThenStall("f", "later") },
		"parameter status": func(s *fakepg.Conn) error {
			return s.Send(&pgproto3.ParameterStatus{Name: "application_name", Value: "x"})
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := testContext(t)
			srv, err := fakepg.Listen()
			require.NoError(t, err)
			t.Cleanup(func() { srv.Close() })
			c, sess := fakeMember(t, srv)
			m := newManager(t, pgnotify.WithHealthCheck(0, 0))
			require.NoError(t, m.Add(ctx, c))
			for i := range 20 {
				require.NoError(t, sess.NotifyN("f", 3, func(int) string { return fmt.Sprint(i) }))
				require.NoError(t, after(sess))
				got := 0
				for got < 3 {
					short, cancel := context.WithTimeout(ctx, 5*time.Second)
					ev, err := m.Next(short)
					cancel()
					require.NoError(t, err, "round %d: what was read is held back", i)
					got += len(ev.Notifications)
				}
				if name == "half frame" {
					require.NoError(t, sess.ResumeStalled())
					ev := next(t, ctx, m)
					assert.Equal(t, "later", ev.Notifications[0].Payload)
				}
			}
		})
	}
}
