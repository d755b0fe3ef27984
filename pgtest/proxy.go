package pgtest

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/seed-c59d106d/pgnotify/internal/faultproxy"
)

// Proxy is a loopback TCP proxy in front of a PostgreSQL server, for testing
// what code does when its connections break: every connection made with
// [Proxy.ConnString] goes through it, and the test can cut them all
// ([Proxy.Cut]) or let nothing through ([Proxy.Blackhole]) until
// [Proxy.Resume]. It copies bytes and knows nothing of PostgreSQL, so TLS
// passes through too (but see [Proxy.ConnString]).
//
// To break one connection and not another, give each its own Proxy: a
// proxy's methods act on all of its connections.
//
// Its methods are safe for concurrent use, from any goroutine.
type Proxy struct {
	p          *faultproxy.Proxy
	connString string
}

// NewProxy starts a proxy on 127.0.0.1 in front of the server connString
// names (a URL or keyword/value settings, as pgx takes; the first host of a
// multi-host string) and closes it in t.Cleanup, which cuts every connection
// still open. It fails t (t.Fatal) when connString does not parse or names a
// Unix socket, which the proxy cannot forward. The server is dialled for each
// connection the proxy accepts, not here.
func NewProxy(t testing.TB, connString string) *Proxy {
	t.Helper()
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		t.Fatalf("pgtest.NewProxy: %v", err)
	}
	if strings.HasPrefix(cfg.Host, "/") {
		t.Fatalf("pgtest.NewProxy: %s is a Unix socket directory; the proxy forwards TCP: give a host and port", cfg.Host)
	}
	p, err := faultproxy.New(net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	if err != nil {
		t.Fatalf("pgtest.NewProxy: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("pgtest: close the proxy: %v", err)
		}
	})
	return &Proxy{p: p, connString: p.ConnString(connString)}
}

// ConnString returns the connection string given to [NewProxy] with its host
// and port replaced by the proxy's (127.0.0.1 and a free port), so that pgx
// connects through the proxy; everything else (user, database, parameters)
// is kept. With sslmode=verify-full the server's certificate must be valid
// for 127.0.0.1.
func (p *Proxy) ConnString() string { return p.connString }

// Cut closes every connection through the proxy at once, on both sides, as a
// server that crashed or a middlebox that reset them would: a client's next
// read fails (pgx reports an unexpected EOF or a reset), and the server ends
// each backend, whose LISTENs are gone with it. The proxy goes on accepting,
// so a client that reconnects gets through (unless a [Proxy.Blackhole] is in
// force). Cut returns without waiting for the clients to notice.
func (p *Proxy) Cut() { p.p.CutAll() }

// Blackhole stops all forwarding while keeping every socket open, as a
// network partition does: the connections through the proxy are half-open,
// a client's writes succeed (until the socket buffers fill), and nothing
// reaches the server or comes back, not even a close. Connections made
// during the blackhole reach the proxy but get no answer to their startup
// message, so connecting hangs until its context or connect_timeout ends.
// Nothing is lost: [Proxy.Resume] delivers what was held back.
//
// Only a deadline finds a blackhole: code under test needs a health check
// or a context with a timeout. A pgx connection that gave up on a query
// behind a blackhole closes in the background, waiting up to 15 s for the
// server's goodbye; [Proxy.Cut] or [Proxy.Resume] ends that wait.
func (p *Proxy) Blackhole() { p.p.Partition() }

// Resume ends a [Proxy.Blackhole]: every connection forwards again, bytes
// held back first, as TCP retransmits them once a partition heals, and new
// connections go through. A connection its client has given up on meanwhile
// is closed by the client as usual. Resume does nothing without a blackhole.
func (p *Proxy) Resume() { p.p.Heal() }
