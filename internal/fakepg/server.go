// Package fakepg is a fake PostgreSQL server for tests and benchmarks. It
// speaks enough of the wire protocol (through pgproto3) for pgx and pgnotify
// to connect, LISTEN, ping and wait for notifications, and it lets the
// caller inject the faults a real server will not produce on demand: a
// malformed frame, an oversized length, a frame cut in half and stalled, a
// FATAL error, an abrupt close, a silent peer.
//
//	srv, err := fakepg.Listen()
//	...
//	defer srv.Close()
//	conn, err := pgx.Connect(ctx, srv.ConnString())
//	...
//	sess, err := srv.NextConn(ctx) // the server's side of conn
//	sess.Notify("jobs", "42")      // conn.WaitForNotification returns it
//	sess.SendMalformed()           // the next read on conn fails and closes it
//
// # What the fake answers
//
// Startup: SSLRequest and GSSEncRequest are refused with 'N', any user and
// database are accepted without a password, and the session gets a PID
// counting up from 1000. A CancelRequest connection is accepted and closed.
//
// Simple queries (pgconn's Exec, pgx's simple protocol, pgconn's Ping) get
// answers good enough for pgnotify; see [Conn] for the statements it knows.
// The extended protocol (Parse/Bind/Execute) is refused with a clean
// ErrorResponse (SQLSTATE 0A000) and ReadyForQuery at Sync, so a pgx query
// in its default exec mode fails instead of hanging.
//
// There are no transactions: every ReadyForQuery says idle ('I').
//
// # Faults
//
// [Server.NextConn] hands the test each session once its startup is done;
// the [Conn] methods then inject messages and faults from the test's
// goroutine while the server's goroutine keeps answering queries.
// [Conn.OnQuery] runs a hook on the server's goroutine for each query, so a
// fault can be timed to a round trip (a ping answered by a stall, a LISTEN
// answered by a FATAL).
package fakepg

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
)

// ErrServerClosed is returned by [Server.NextConn] once the server is closed
// and every session it accepted has been handed out.
var ErrServerClosed = errors.New("fakepg: server closed")

// firstPID is the backend PID of the first session; each later session gets
// the next number.
const firstPID = 1000

// Server is a fake PostgreSQL server listening on a loopback port. Create it
// with [Listen] and stop it with [Server.Close]. All its methods are safe
// for concurrent use.
type Server struct {
	ln net.Listener

	// wg counts the accept loop and one goroutine per accepted connection.
	// Add is only called with mu held and closed false, so Close's Wait
	// cannot race with it.
	wg sync.WaitGroup

	mu      sync.Mutex         // guards the fields below
	closed  bool               // Close was called
	nextPID uint32             // the PID the next session gets
	conns   map[*Conn]struct{} // every accepted connection not yet ended, in startup or serving
	ready   []*Conn            // sessions whose startup is done, not yet returned by NextConn
	wake    chan struct{}      // closed (and replaced) when ready grows or the server closes
}

// Listen starts a server on 127.0.0.1 on a free port. Each accepted
// connection is served by its own goroutine until the client leaves, a fault
// ends it, or [Server.Close] is called.
func Listen() (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fakepg: listen: %w", err)
	}
	s := &Server{
		ln:      ln,
		nextPID: firstPID,
		conns:   make(map[*Conn]struct{}),
		wake:    make(chan struct{}),
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Addr returns the server's address, "127.0.0.1:PORT".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// ConnString returns a URL that pgx connects to the server with:
// "postgres://fake@127.0.0.1:PORT/fake?sslmode=disable".
func (s *Server) ConnString() string {
	return "postgres://fake@" + s.Addr() + "/fake?sslmode=disable"
}

// acceptLoop runs on its own goroutine until the listener is closed. Any
// accept error ends it: on a loopback listener the only expected one is the
// close, and retrying others in a loop would only spin.
func (s *Server) acceptLoop() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		c := newConn(s, nc)
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// assignPID returns the PID for a session whose StartupMessage just arrived.
func (s *Server) assignPID() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	pid := s.nextPID
	s.nextPID++
	return pid
}

// publish makes c, whose startup reply is about to be sent, visible to
// NextConn and Conns. Called with c.wmu held.
func (s *Server) publish(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.published = true
	s.ready = append(s.ready, c)
	close(s.wake)
	s.wake = make(chan struct{})
}

// forget removes c, which has ended, from the live set. A session still
// waiting in ready stays there: NextConn hands it out all the same, and the
// test finds it ended.
func (s *Server) forget(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

// NextConn returns the next session whose startup is done (the server has
// answered the StartupMessage; injections land after that answer), in the
// order the startups finished. Each session is returned once. It blocks until there is one, ctx
// is done (the context's error), or the server is closed and none is left
// ([ErrServerClosed]). A session that has already ended is still returned.
func (s *Server) NextConn(ctx context.Context) (*Conn, error) {
	for {
		s.mu.Lock()
		if len(s.ready) > 0 {
			c := s.ready[0]
			s.ready[0] = nil
			s.ready = s.ready[1:]
			s.mu.Unlock()
			return c, nil
		}
		if s.closed {
			s.mu.Unlock()
			return nil, ErrServerClosed
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wake:
		}
	}
}

// Conns returns the sessions whose startup is done and that have not ended,
// ordered by PID, whether or not NextConn has returned them. A client's
// session is listed by the time its pgx.Connect returns.
func (s *Server) Conns() []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Conn
	for c := range s.conns {
		if c.published {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b *Conn) int { return cmp.Compare(a.pid, b.pid) })
	return out
}

// Close stops accepting, closes every connection (clients see the socket
// close, with no message), and waits for all of the server's goroutines to
// return. It is safe to call more than once; later calls return nil.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.wake)
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	err := s.ln.Close()
	for _, c := range conns {
		c.end(false)
	}
	s.wg.Wait()
	if err != nil {
		return fmt.Errorf("fakepg: close: %w", err)
	}
	return nil
}
