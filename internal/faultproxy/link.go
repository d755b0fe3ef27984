package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// pumpBuf is the size of each direction's copy buffer.
const pumpBuf = 32 << 10

// Link is one proxied connection: the client's socket on the proxy and the
// proxy's socket to the target, with one goroutine copying each way. Get it
// from [Proxy.NextLink] or [Proxy.Links]. Its methods are safe for
// concurrent use.
//
// A side closing its socket normally (EOF) is passed on as a half close, so
// a server's last message and its FIN reach the client in order; the link
// ends when both directions have ended. A side resetting its socket is
// passed on as a reset, and ends the link at once, as does a failed write.
type Link struct {
	client, server net.Conn

	mu         sync.Mutex // guards blackholed and cut
	cond       sync.Cond  // L is &mu; broadcast when blackholed clears or the link is cut
	blackholed bool       // Blackhole was called and Resume not since
	cut        bool       // Cut was called, or the link failed: both sockets are closing

	pumps atomic.Int32  // pump goroutines still running
	ended func(l *Link) // called once, when the link has ended, before done is closed
	done  chan struct{} // closed when both pumps have returned and both sockets are closed
}

func newLink(client, server net.Conn, ended func(*Link)) *Link {
	l := &Link{client: client, server: server, ended: ended, done: make(chan struct{})}
	l.cond.L = &l.mu
	l.pumps.Store(2)
	return l
}

// ClientAddr returns the client's address as the proxy sees it: the local
// address of the client's own socket (for pgx, conn.PgConn().Conn().LocalAddr()),
// which tells links apart.
func (l *Link) ClientAddr() net.Addr { return l.client.RemoteAddr() }

// Done returns a channel that is closed when the link has ended: both
// sockets are closed, [Proxy.Links] no longer lists it, and its goroutines
// are returning.
func (l *Link) Done() <-chan struct{} { return l.done }

// Cut closes both sockets at once, whatever is in flight: the client's next
// read sees the connection end (EOF, or a reset if the proxy had unread
// bytes from it), and so does the server. Bytes held back by a blackhole are
// dropped. Cut is idempotent and does not wait for the link's goroutines
// (see [Link.Done]).
func (l *Link) Cut() {
	l.mu.Lock()
	if l.cut {
		l.mu.Unlock()
		return
	}
	l.cut = true
	l.cond.Broadcast()
	l.mu.Unlock()
	l.client.Close()
	l.server.Close()
}

// Blackhole stops forwarding in both directions while keeping both sockets
// open, as a network partition does: the client's writes succeed (until
// the socket buffers fill), nothing reaches the server and nothing comes
// back, not even a close. Bytes already being written when it is called
// still arrive. Nothing is dropped: [Link.Resume] delivers what was held
// back, as TCP would retransmit it once the partition heals.
func (l *Link) Blackhole() {
	l.mu.Lock()
	l.blackholed = true
	l.mu.Unlock()
}

// Resume ends a blackhole: forwarding starts again, with the bytes held
// back first. It does nothing on a link that is not blackholed or is cut.
func (l *Link) Resume() {
	l.mu.Lock()
	l.blackholed = false
	l.cond.Broadcast()
	l.mu.Unlock()
}

// gate waits while the link is blackholed and reports whether the pump may
// go on (false once the link is cut).
func (l *Link) gate() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.blackholed && !l.cut {
		l.cond.Wait()
	}
	return !l.cut
}

// pump copies src to dst on its own goroutine until src ends or the link is
// cut. Whatever it read, data, EOF or error, passes the gate first, so a
// blackholed link lets nothing through, not even a close.
func (l *Link) pump(wg *sync.WaitGroup, dst, src net.Conn) {
	defer wg.Done()
	defer l.pumpDone()
	buf := make([]byte, pumpBuf)
	for {
		n, err := src.Read(buf)
		if !l.gate() {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				l.Cut()
				return
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			// Pass the close on as a half close: the other direction may
			// still carry data (the client's Terminate, say).
			if tc, ok := dst.(*net.TCPConn); ok && tc.CloseWrite() == nil {
				return
			}
			l.Cut()
			return
		default:
			// Pass a reset on as a reset: linger 0 makes dst's close
			// send an RST instead of a FIN.
			if tc, ok := dst.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			l.Cut()
			return
		}
	}
}

// pumpDone runs as each pump returns; the last one closes both sockets,
// tells the proxy (so Links no longer lists the link) and marks it done.
func (l *Link) pumpDone() {
	if l.pumps.Add(-1) > 0 {
		return
	}
	l.mu.Lock()
	l.cut = true
	l.cond.Broadcast()
	l.mu.Unlock()
	l.client.Close()
	l.server.Close()
	l.ended(l)
	close(l.done)
}
