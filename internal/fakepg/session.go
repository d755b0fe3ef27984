package fakepg

import (
	"encoding/binary"
	"net"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"
)

// NotifierPID is the sender PID in every notification the fake sends with
// [Conn.Notify], [Conn.NotifyN] and the other injections: a backend that is
// not one of the server's sessions. (A NOTIFY statement run on a session
// carries that session's PID instead, as on a real server.)
const NotifierPID uint32 = 999

// parameterStatuses are the ParameterStatus messages sent at startup: the
// ones a PostgreSQL 15 server reports and pgx or its type codecs look at.
var parameterStatuses = [...][2]string{
	{"server_version", "15.0"},
	{"client_encoding", "UTF8"},
	{"standard_conforming_strings", "on"},
	{"DateStyle", "ISO, MDY"},
	{"integer_datetimes", "on"},
	{"server_encoding", "UTF8"},
	{"TimeZone", "UTC"},
}

// Conn is the server's side of one session. Get it from [Server.NextConn]
// or [Server.Conns]. One goroutine of the server serves the session (reads
// the client's messages and answers them); every exported method is safe to
// call from any other goroutine meanwhile. Writes are serialized, so an
// injected message never lands inside an answer.
//
// Simple queries are answered statement by statement (statements are
// separated by semicolons outside quotes and comments; comments are
// ignored; there is no dollar quoting):
//
//   - nothing but comments or blanks ("-- ping", pgconn's Ping): EmptyQueryResponse;
//   - any statement mentioning pg_listening_channels: one text column, one row per
//     channel the session listens on, in LISTEN order, "SELECT n";
//   - LISTEN name, UNLISTEN name, UNLISTEN *: the session's channel set changes,
//     "LISTEN" or "UNLISTEN" (a quoted name loses its quotes and has "" undoubled;
//     an unquoted one is folded to lower case);
//   - NOTIFY name [, 'payload']: every session of this server listening on name
//     gets the notification, with the sender's PID, "NOTIFY";
//   - any other SELECT: one int4 column "?column?", one row "1", "SELECT 1";
//   - anything else: CommandComplete whose tag is the statement's first word in
//     upper case (BEGIN, SET, ...), without doing anything.
//
// A statement the fake cannot parse (LISTEN with no name, say) gets an
// ErrorResponse (42601) and the rest of the query is skipped. As in the
// server's implicit transaction, channel changes and NOTIFYs take effect only
// if every statement of the query succeeds. Every answer ends with
// ReadyForQuery 'I'.
type Conn struct {
	srv *Server
	nc  net.Conn
	be  *pgproto3.Backend // owned by the serve goroutine

	// pid is written by the serve goroutine before the session is
	// published (under srv.mu) and never changes after; readers get the
	// Conn only through srv.mu, so they see it.
	pid       uint32
	published bool // guarded by srv.mu: startup is done, Conns lists it

	mu       sync.Mutex            // guards channels and onQuery
	channels []string              // the session's channels, in LISTEN order
	onQuery  func(sql string) bool // set by OnQuery; nil means none

	wmu     sync.Mutex // held for every write to nc; guards stalled
	wcond   sync.Cond  // L is &wmu; broadcast when stalled clears or the conn ends
	stalled []byte     // the unsent rest of a frame SendHalfThenStall cut; nil if none

	silenced atomic.Bool   // Silence was called: read and discard, never answer
	fatal    atomic.Bool   // SendFatal shut the write side: read until the client leaves
	ended    atomic.Bool   // the socket is closed or closing; nothing more is written
	done     chan struct{} // closed when the serve goroutine returns
}

func newConn(s *Server, nc net.Conn) *Conn {
	c := &Conn{srv: s, nc: nc, done: make(chan struct{})}
	c.wcond.L = &c.wmu
	c.be = pgproto3.NewBackend(nc, replyWriter{c})
	return c
}

// PID returns the session's backend PID (the one in its BackendKeyData).
func (c *Conn) PID() uint32 { return c.pid }

// Channels returns the channels the session listens on, sorted.
func (c *Conn) Channels() []string {
	c.mu.Lock()
	out := slices.Clone(c.channels)
	c.mu.Unlock()
	slices.Sort(out)
	if out == nil {
		out = []string{}
	}
	return out
}

// Done returns a channel that is closed when the session has ended: the
// client terminated or closed its socket, a fault closed it, or the server
// was closed. By then [Server.Conns] no longer lists it and the server's
// goroutine for it is returning.
func (c *Conn) Done() <-chan struct{} { return c.done }

// OnQuery sets a hook that the server's goroutine calls with the text of
// each simple query the session receives from then on, before answering it.
// If the hook returns true the query counts as handled and the fake sends
// nothing for it; the hook may have sent its own answer with [Conn.Send], or
// injected a fault ([Conn.SendFatal], [Conn.CloseAbrupt], [Conn.Silence],
// [Conn.SendHalfThenStall], ...). If it returns false the fake answers as
// usual. The hook runs on the server's goroutine, so it must not wait for
// anything that needs this session to make progress. A nil hook removes it.
func (c *Conn) OnQuery(hook func(sql string) bool) {
	c.mu.Lock()
	c.onQuery = hook
	c.mu.Unlock()
}

// serve runs the session on its own goroutine, from the startup packet to
// the end of the connection.
func (c *Conn) serve() {
	defer c.srv.wg.Done()
	defer close(c.done)
	defer c.srv.forget(c)
	defer c.end(false)

	if !c.startup() {
		return
	}

	// failed is true from an extended-protocol error until the next Sync:
	// like the server, the fake then ignores everything but Sync.
	failed := false
	for {
		msg, err := c.be.Receive()
		if err != nil {
			return
		}
		// Terminate ends the session even when silenced or after a FATAL:
		// pgx's background close drains the socket until the server closes
		// it (up to 15 s), and tests wait for that cleanup.
		if _, ok := msg.(*pgproto3.Terminate); ok {
			return
		}
		if c.silenced.Load() || c.fatal.Load() {
			continue
		}
		switch msg := msg.(type) {
		case *pgproto3.Query:
			c.answerQuery(msg.String)
		case *pgproto3.Parse, *pgproto3.Bind, *pgproto3.Describe, *pgproto3.Execute, *pgproto3.Close:
			if !failed {
				failed = true
				c.be.Send(errorResponse("ERROR", "0A000", "fakepg: extended protocol not supported"))
			}
		case *pgproto3.Sync:
			failed = false
			c.be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		case *pgproto3.FunctionCall:
			c.be.Send(errorResponse("ERROR", "0A000", "fakepg: function call not supported"))
			c.be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		default:
			// Flush and COPY messages need no answer here.
		}
		if err := c.be.Flush(); err != nil {
			return
		}
	}
}

// startup answers the startup packets, publishes the session to the server
// if one began, and reports whether it did.
// SSL and GSS encryption are refused, as by a server built without them, so
// pgx goes on in plain text (or gives up, per its sslmode).
func (c *Conn) startup() bool {
	for {
		msg, err := c.be.ReceiveStartupMessage()
		if err != nil {
			return false
		}
		switch msg := msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := c.nc.Write([]byte{'N'}); err != nil {
				return false
			}
		case *pgproto3.CancelRequest:
			// There is never a query to cancel that the fake would notice.
			return false
		case *pgproto3.StartupMessage:
			c.pid = c.srv.assignPID()
			// Protocol 3.2 allows (and PostgreSQL 18 sends) longer keys.
			key := make([]byte, 4)
			if msg.ProtocolVersion == pgproto3.ProtocolVersion32 {
				key = make([]byte, 32)
			}
			binary.BigEndian.PutUint32(key, c.pid)
			reply := []pgproto3.BackendMessage{&pgproto3.AuthenticationOk{}}
			for _, p := range parameterStatuses {
				reply = append(reply, &pgproto3.ParameterStatus{Name: p[0], Value: p[1]})
			}
			reply = append(reply,
				&pgproto3.BackendKeyData{ProcessID: c.pid, SecretKey: key},
				&pgproto3.ReadyForQuery{TxStatus: 'I'})
			var buf []byte
			for _, m := range reply {
				if buf, err = m.Encode(buf); err != nil {
					return false
				}
			}
			// Publish while holding wmu, before the client can see
			// ReadyForQuery: Conns lists the session once the client's
			// Connect returns, and an injection from a test that got the
			// session this early still lands after the startup reply.
			c.wmu.Lock()
			c.srv.publish(c)
			_, err = c.nc.Write(buf)
			c.wmu.Unlock()
			return err == nil
		default:
			return false
		}
	}
}

// errorResponse returns an ErrorResponse with the given severity, SQLSTATE
// and message.
func errorResponse(severity, code, msg string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{
		Severity:            severity,
		SeverityUnlocalized: severity,
		Code:                code,
		Message:             msg,
	}
}

// replyWriter is the pgproto3.Backend's writer: the serve goroutine's
// answers go through it, one Flush per Write.
type replyWriter struct{ c *Conn }

// Write sends one flushed batch of answers. It waits while a frame is
// stalled half-sent (anything written now would land inside it), and drops
// the answers of a silenced session and of one that SendFatal ended (the
// serve loop must go on draining the client until it leaves).
func (w replyWriter) Write(p []byte) (int, error) {
	c := w.c
	if len(p) == 0 {
		return 0, nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for c.stalled != nil && !c.ended.Load() {
		c.wcond.Wait()
	}
	switch {
	case c.ended.Load():
		return 0, net.ErrClosed
	case c.silenced.Load() || c.fatal.Load():
		return len(p), nil
	}
	return c.nc.Write(p)
}

// end closes the socket (abort: with an RST rather than a FIN) and wakes a
// writer waiting on a stalled frame. Only the first call does anything, and
// only it returns true. Callers must not hold wmu: a write blocked on a full
// socket holds it until the close fails it.
func (c *Conn) end(abort bool) bool {
	if !c.ended.CompareAndSwap(false, true) {
		return false
	}
	if tc, ok := c.nc.(*net.TCPConn); ok && abort {
		// Linger 0 makes close send an RST: the client's read fails
		// with "connection reset by peer" instead of seeing EOF.
		_ = tc.SetLinger(0)
	}
	c.nc.Close()
	c.wmu.Lock()
	c.wcond.Broadcast()
	c.wmu.Unlock()
	return true
}
