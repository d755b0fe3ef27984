package durable

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// A stream whose consumer has stopped taking batches stops reading once its
// read-ahead is full, and TCP holds the walsender back. A stopping server
// waits until each walsender has sent all its WAL and heard it confirmed (as
// written), so such a stream would hold up pg_ctl stop -m fast for as long as
// the consumer stalls, and nothing the server sends about it gets past the
// full socket. Not answering the server would let its wal_sender_timeout end
// the connection, but also drop every slow consumer. So while the receiver is
// held back, it asks the server every probeEvery whether it still accepts
// connections, on a new ordinary connection to the same address: a server
// that refuses with SQLSTATE 57P03 (cannot_connect_now: "the database system
// is shutting down") is stopping, and the receiver closes its connection,
// which lets the walsender exit; the stream then reconnects as after any loss.
const (
	probeAfter   = time.Second     // held back this long: start probing
	probeEvery   = time.Second     // between probes
	probeTimeout = 5 * time.Second // one probe's connection attempt
)

// codeCannotConnectNow is the SQLSTATE of a server that is starting up or
// shutting down.
const codeCannotConnectNow = "57P03"

// prober runs at most one probe at a time in its own goroutine. It belongs
// to the receiver.
type prober struct {
	cfg     *pgconn.Config // an ordinary connection to the replication connection's address
	result  chan error     // cap 1: the running probe's outcome
	cancel  context.CancelFunc
	running bool
}

// newProber returns a prober for the server conn is connected to. base is
// the replication connection's config: the probe uses its credentials and
// TLS settings, but dials conn's remote address, so that with several hosts
// it asks the server the stream reads and no other.
func newProber(base *pgconn.Config, conn *pgconn.PgConn) *prober {
	cfg := base.Copy()
	delete(cfg.RuntimeParams, "replication")
	cfg.ValidateConnect = nil
	cfg.AfterConnect = nil
	cfg.OnNotice = nil
	cfg.OnNotification = nil
	if _, isTLS := conn.Conn().(*tls.Conn); !isTLS {
		cfg.TLSConfig = nil
	} else if cfg.TLSConfig == nil {
		for _, fb := range base.Fallbacks {
			if fb.TLSConfig != nil {
				cfg.TLSConfig = fb.TLSConfig
				break
			}
		}
	}
	cfg.Fallbacks = nil
	addr := conn.Conn().RemoteAddr()
	dial := base.DialFunc
	cfg.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
		return dial(ctx, addr.Network(), addr.String())
	}
	return &prober{cfg: cfg, result: make(chan error, 1)}
}

// start begins a probe unless one is running.
func (p *prober) start(ctx context.Context) {
	if p.running {
		return
	}
	p.running = true
	ctx, p.cancel = context.WithTimeout(ctx, probeTimeout)
	go func() {
		conn, err := pgconn.ConnectConfig(ctx, p.cfg)
		if err == nil {
			conn.Close(ctx)
			<-conn.CleanupDone()
		}
		p.result <- err
	}()
}

// done takes a finished probe's outcome (from p.result) and reports whether
// it found the server stopping, as an error.
func (p *prober) done(err error) error {
	p.running = false
	p.cancel()
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == codeCannotConnectNow {
		return fmt.Errorf("%w: %w", errServerStopping, err)
	}
	return nil
}

// stop ends a running probe and waits for its goroutine.
func (p *prober) stop() {
	if p.running {
		p.cancel()
		<-p.result
		p.running = false
	}
}
