// Package faultproxy is a loopback TCP proxy for fault tests: it sits
// between a client and a real server and can cut a connection (both sides
// see it close) or blackhole it (both sockets stay open but nothing gets
// through: a half-open peer), then let it resume.
//
//	p, err := faultproxy.New(serverAddr) // "127.0.0.1:5432"
//	...
//	defer p.Close()
//	conn, err := pgx.Connect(ctx, p.ConnString(serverURL))
//	...
//	link := p.LinkFor(conn.PgConn().Conn().LocalAddr()) // conn's link
//	link.Blackhole() // conn's pings now time out
//	link.Cut()       // conn's next read fails
//	p.Partition()    // every link, and every one made until p.Heal(), blackholed
//
// The proxy knows nothing of PostgreSQL: it copies bytes.
package faultproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// ErrProxyClosed is returned by [Proxy.NextLink] once the proxy is closed
// and every link it made has been handed out.
var ErrProxyClosed = errors.New("faultproxy: proxy closed")

// Proxy accepts connections on a loopback port and forwards each to the
// target address as a [Link]. Create it with [New] and stop it with
// [Proxy.Close]. All its methods are safe for concurrent use.
type Proxy struct {
	target string
	ln     net.Listener

	// ctx is cancelled by Close, which ends dials to the target in flight.
	ctx    context.Context
	cancel context.CancelFunc

	// wg counts the accept loop and every link's goroutines. Add is only
	// called with mu held and closed false, so Close's Wait cannot race
	// with it.
	wg sync.WaitGroup

	mu          sync.Mutex         // guards the fields below
	closed      bool               // Close was called
	partitioned bool               // Partition was called and Heal not since: new links start blackholed
	links       map[*Link]struct{} // links not yet ended
	order       []*Link            // live links in the order they were made (for Links)
	ready       []*Link            // links not yet returned by NextLink
	wake        chan struct{}      // closed (and replaced) when ready grows or the proxy closes
}

// New starts a proxy on 127.0.0.1 on a free port that forwards each
// connection it accepts to target ("host:port"). The target is dialed per
// accepted connection; if that fails, the client's connection is closed.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		target: target,
		ln:     ln,
		ctx:    ctx,
		cancel: cancel,
		links:  make(map[*Link]struct{}),
		wake:   make(chan struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the proxy's address, "127.0.0.1:PORT".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// ConnString returns base with its host and port replaced by the proxy's.
// base is a URL ("postgres://user@host:port/db?..."; the hosts of a
// multi-host URL are all replaced by the one proxy) or keyword/value
// settings ("host=... port=..."), to which host and port settings are
// appended: pgx keeps the last value of a repeated keyword. A URL that does
// not parse is returned unchanged.
func (p *Proxy) ConnString(base string) string {
	if !strings.Contains(base, "://") {
		host, port, _ := net.SplitHostPort(p.Addr())
		return strings.TrimSpace(base + " host=" + host + " port=" + port)
	}
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	u.Host = p.Addr()
	return u.String()
}

// acceptLoop runs on its own goroutine until the listener is closed. Any
// accept error ends it: on a loopback listener the only expected one is the
// close.
func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			client.Close()
			return
		}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.open(client)
	}
}

// open dials the target for client and, on success, starts the link. It
// runs on its own goroutine so a slow dial holds up no other client.
func (p *Proxy) open(client net.Conn) {
	defer p.wg.Done()
	var d net.Dialer
	server, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	l := newLink(client, server, p.forget)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		client.Close()
		server.Close()
		return
	}
	// Under mu, so that a Partition either lists l or is seen here: no
	// byte of a link made during a partition gets through.
	if p.partitioned {
		l.Blackhole()
	}
	p.links[l] = struct{}{}
	p.order = append(p.order, l)
	p.ready = append(p.ready, l)
	close(p.wake)
	p.wake = make(chan struct{})
	p.wg.Add(2)
	p.mu.Unlock()

	go l.pump(&p.wg, server, client)
	go l.pump(&p.wg, client, server)
}

// forget removes l, which has ended, from the live set. A link still
// waiting in ready stays there: NextLink hands it out all the same.
func (p *Proxy) forget(l *Link) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.links, l)
	for i, o := range p.order {
		if o == l {
			p.order = append(p.order[:i], p.order[i+1:]...)
			break
		}
	}
}

// NextLink returns the next link the proxy made, in the order they were
// made (once the target accepted the dial). Each link is returned once. It
// blocks until there is one, ctx is done (the context's error), or the
// proxy is closed and none is left ([ErrProxyClosed]). A link that has
// already ended is still returned.
//
// Every connection is a link, including the short ones pgx opens to send a
// CancelRequest (it sends one whenever it closes a connection that broke).
// With more than one client, find a client's link with [Proxy.LinkFor].
func (p *Proxy) NextLink(ctx context.Context) (*Link, error) {
	for {
		p.mu.Lock()
		if len(p.ready) > 0 {
			l := p.ready[0]
			p.ready[0] = nil
			p.ready = p.ready[1:]
			p.mu.Unlock()
			return l, nil
		}
		if p.closed {
			p.mu.Unlock()
			return nil, ErrProxyClosed
		}
		wake := p.wake
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wake:
		}
	}
}

// Links returns the links that have not ended, oldest first, whether or not
// NextLink has returned them.
func (p *Proxy) Links() []*Link {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*Link, len(p.order))
	copy(out, p.order)
	return out
}

// LinkFor returns the live link whose client connected from clientAddr
// (for pgx: conn.PgConn().Conn().LocalAddr()), or nil if there is none.
func (p *Proxy) LinkFor(clientAddr net.Addr) *Link {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.order {
		if l.ClientAddr().String() == clientAddr.String() {
			return l
		}
	}
	return nil
}

// CutAll cuts every live link (see [Link.Cut]). Links made later are not
// affected.
func (p *Proxy) CutAll() {
	for _, l := range p.Links() {
		l.Cut()
	}
}

// BlackholeAll blackholes every live link (see [Link.Blackhole]). Links made
// later are not affected.
func (p *Proxy) BlackholeAll() {
	for _, l := range p.Links() {
		l.Blackhole()
	}
}

// ResumeAll resumes every live link (see [Link.Resume]).
func (p *Proxy) ResumeAll() {
	for _, l := range p.Links() {
		l.Resume()
	}
}

// Partition blackholes every live link and every link made until [Proxy.Heal],
// as a network partition between client and server does: a client that
// connects anew reaches the proxy, but its startup message gets no answer.
func (p *Proxy) Partition() {
	p.mu.Lock()
	p.partitioned = true
	links := slices.Clone(p.order)
	p.mu.Unlock()
	for _, l := range links {
		l.Blackhole()
	}
}

// Heal ends a [Proxy.Partition]: every live link resumes (see [Link.Resume]),
// held-back bytes first, and new links forward at once.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.partitioned = false
	links := slices.Clone(p.order)
	p.mu.Unlock()
	for _, l := range links {
		l.Resume()
	}
}

// Close stops accepting, cuts every link, and waits for all of the proxy's
// goroutines to return. It is safe to call more than once; later calls
// return nil.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.wake)
	links := make([]*Link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()

	p.cancel()
	err := p.ln.Close()
	for _, l := range links {
		l.Cut()
	}
	p.wg.Wait()
	if err != nil {
		return fmt.Errorf("faultproxy: close: %w", err)
	}
	return nil
}
