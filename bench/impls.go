package main

// The implementations under test. Each receives notifications on one
// connection (impl) or on K connections (fanImpl) and hands every one to the
// application, a callback taking the channel and the payload. Each is
// written the way its documentation shows, with what a careful user would
// add: pgx and pgproto3 loops that run on context.Background get a socket
// read deadline as a watchdog (it costs nothing per read).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/lib/pq"
	"golang.org/x/sync/errgroup"

	"github.com/seed-c59d106d/pgnotify"
)

// sink is the application: it gets every notification's channel and payload.
type sink func(channel, payload string)

// session is one listening connection (or K of them, fanning in) that
// receives only when asked: between receive calls it is "paused".
type session interface {
	// receive hands the next n notifications to f, then returns.
	receive(ctx context.Context, n int, f sink) error
	close()
}

// impl opens single-connection sessions.
type impl struct {
	key  string // for -impl and the results file
	name string // for tables
	open func(ctx context.Context, connString, channel string) (session, error)
}

// singleImpls are the implementations of the client, backlog and latency
// scenarios, in table order.
var singleImpls = []impl{
	{key: "manager", name: "pgnotify Manager", open: openManager},
	{key: "wait", name: "pgnotify Wait(ctx)", open: openWait(false)},
	{key: "waitbg", name: "pgnotify Wait(Background)", open: openWait(true)},
	{key: "pgx", name: "pgx WaitForNotification(ctx)", open: openPgx(false)},
	{key: "pgxbg", name: "pgx WaitForNotification(Background)", open: openPgx(true)},
	{key: "pq", name: "lib/pq Listener", open: openPQ},
	{key: "pgproto3", name: "bare pgproto3", open: openProto},
}

// connectListen opens a pgx connection listening on channels.
func connectListen(ctx context.Context, connString string, channels ...string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return nil, err
	}
	if len(channels) > 0 {
		if err := pgnotify.Listen(ctx, conn, channels...); err != nil {
			conn.Close(ctx)
			return nil, err
		}
	}
	return conn, nil
}

// ---- pgnotify Manager ----

type managerSession struct {
	m     *pgnotify.Manager
	conns []*pgx.Conn
}

func openManager(ctx context.Context, connString, channel string) (session, error) {
	return openManagerK(ctx, connString, []string{channel})
}

// openManagerK opens one connection per channel and adds them all to a new
// Manager with the default options.
func openManagerK(ctx context.Context, connString string, channels []string, opts ...pgnotify.Option) (session, error) {
	conns, err := connectMany(ctx, connString, channels)
	if err != nil {
		return nil, err
	}
	m := pgnotify.NewManager(opts...)
	if err := m.Add(ctx, conns...); err != nil {
		closeAll(conns)
		return nil, err
	}
	return &managerSession{m: m, conns: conns}, nil
}

func (s *managerSession) receive(ctx context.Context, n int, f sink) error {
	for got := 0; got < n; {
		ev, err := s.m.Next(ctx)
		if err != nil {
			return err
		}
		switch ev.Kind {
		case pgnotify.Batch:
			for _, x := range ev.Notifications {
				f(x.Channel, x.Payload)
			}
			got += len(ev.Notifications)
		case pgnotify.Dead:
			return fmt.Errorf("manager: connection died: %w", ev.Err)
		}
	}
	return nil
}

func (s *managerSession) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.m.Close(ctx)
}

// ---- pgnotify Wait ----

type waitSession struct {
	conn       *pgx.Conn
	background bool
}

func openWait(background bool) func(ctx context.Context, connString, channel string) (session, error) {
	return func(ctx context.Context, connString, channel string) (session, error) {
		conn, err := connectListen(ctx, connString, channel)
		if err != nil {
			return nil, err
		}
		return &waitSession{conn: conn, background: background}, nil
	}
}

func (s *waitSession) receive(ctx context.Context, n int, f sink) error {
	wctx := ctx
	if s.background {
		wctx = context.Background()
		defer watchdog(ctx, s.conn.PgConn().Conn())()
	}
	got := 0
	for x, err := range pgnotify.Wait(wctx, s.conn, pgnotify.NoTimeout) {
		if err != nil {
			return err
		}
		if x == nil {
			continue
		}
		f(x.Channel, x.Payload)
		if got++; got == n {
			break
		}
	}
	if got < n {
		return fmt.Errorf("wait: ended after %d of %d", got, n)
	}
	return nil
}

func (s *waitSession) close() { s.conn.Close(context.Background()) }

// watchdog puts ctx's deadline on nc's reads (a loop on
// context.Background() has no other way out if the server hangs) and
// returns the function that lifts it.
func watchdog(ctx context.Context, nc net.Conn) func() {
	if dl, ok := ctx.Deadline(); ok {
		nc.SetReadDeadline(dl)
	}
	return func() { nc.SetReadDeadline(time.Time{}) }
}

// ---- raw pgx ----

type pgxSession struct {
	conn       *pgx.Conn
	background bool
}

func openPgx(background bool) func(ctx context.Context, connString, channel string) (session, error) {
	return func(ctx context.Context, connString, channel string) (session, error) {
		conn, err := pgx.Connect(ctx, connString)
		if err != nil {
			return nil, err
		}
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
			conn.Close(ctx)
			return nil, err
		}
		return &pgxSession{conn: conn, background: background}, nil
	}
}

func (s *pgxSession) receive(ctx context.Context, n int, f sink) error {
	if s.background {
		defer watchdog(ctx, s.conn.PgConn().Conn())()
		ctx = context.Background()
	}
	for range n {
		x, err := s.conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		f(x.Channel, x.Payload)
	}
	return nil
}

func (s *pgxSession) close() { s.conn.Close(context.Background()) }

// ---- lib/pq ----

type pqSession struct {
	l *pq.Listener
}

func openPQ(ctx context.Context, connString, channel string) (session, error) {
	l, err := newPQListener(ctx, connString, channel)
	if err != nil {
		return nil, err
	}
	return &pqSession{l: l}, nil
}

// newPQListener starts a Listener and waits for its LISTEN to be
// acknowledged. Listen retries a failing connection forever, so ctx bounds it.
func newPQListener(ctx context.Context, connString, channel string) (*pq.Listener, error) {
	var failed atomic.Value
	l := pq.NewListener(connString, 10*time.Millisecond, time.Second, func(ev pq.ListenerEventType, err error) {
		if err != nil {
			failed.Store(err)
		}
	})
	done := make(chan error, 1)
	go func() { done <- l.Listen(channel) }()
	select {
	case err := <-done:
		if err != nil {
			l.Close()
			return nil, err
		}
		return l, nil
	case <-ctx.Done():
		l.Close()
		err, _ := failed.Load().(error)
		return nil, errors.Join(ctx.Err(), err)
	}
}

func (s *pqSession) receive(ctx context.Context, n int, f sink) error {
	for got := 0; got < n; {
		select {
		case x, ok := <-s.l.Notify:
			if !ok {
				return errors.New("lib/pq: listener closed")
			}
			if x == nil {
				continue // reconnected
			}
			f(x.Channel, x.Extra)
			got++
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (s *pqSession) close() { s.l.Close() }

// ---- bare pgproto3 ----

// protoSession is the floor: pgproto3 decoding a socket, no connection
// library, no notification struct (the application gets the decoded
// message's strings).

type protoSession struct {
	nc net.Conn
	fe *pgproto3.Frontend
}

func openProto(ctx context.Context, connString, channel string) (session, error) {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)))
	if err != nil {
		return nil, err
	}
	s := &protoSession{nc: nc, fe: pgproto3.NewFrontend(nc, nc)}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	s.fe.Send(&pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters:      map[string]string{"user": cfg.User, "database": cfg.Database},
	})
	if err := s.untilReady(); err != nil {
		nc.Close()
		return nil, err
	}
	s.fe.Send(&pgproto3.Query{String: "LISTEN " + pgx.Identifier{channel}.Sanitize()})
	if err := s.untilReady(); err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	return s, nil
}

// untilReady flushes what was sent and reads up to ReadyForQuery.
func (s *protoSession) untilReady() error {
	if err := s.fe.Flush(); err != nil {
		return err
	}
	var failed error
	for {
		msg, err := s.fe.Receive()
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			failed = fmt.Errorf("server: %s", m.Message)
		case *pgproto3.AuthenticationOk:
		case *pgproto3.ReadyForQuery:
			return failed
		}
	}
}

func (s *protoSession) receive(ctx context.Context, n int, f sink) error {
	defer watchdog(ctx, s.nc)()
	for got := 0; got < n; {
		msg, err := s.fe.Receive()
		if err != nil {
			return err
		}
		if m, ok := msg.(*pgproto3.NotificationResponse); ok {
			f(m.Channel, m.Payload)
			got++
		}
	}
	return nil
}

func (s *protoSession) close() {
	s.fe.Send(&pgproto3.Terminate{})
	s.fe.Flush()
	s.nc.Close()
}

// ---- fan-in: K connections, one consumer ----

// fanImpl opens sessions over one connection per channel in channels.
type fanImpl struct {
	key  string
	name string
	open func(ctx context.Context, connString string, channels []string) (session, error)
}

// fanImpls are the implementations of the fanin and idle scenarios.
var fanImpls = []fanImpl{
	{key: "manager", name: "pgnotify Manager", open: func(ctx context.Context, cs string, chs []string) (session, error) {
		return openManagerK(ctx, cs, chs)
	}},
	{key: "pgxchan", name: "pgx goroutine per conn → chan", open: openPgxFan},
	{key: "pq", name: "lib/pq Listener per conn → chan", open: openPQFan},
}

// connectConcurrency bounds connection set-up.
const connectConcurrency = 32

// connectMany opens one pgx connection per channel, listening on it.
func connectMany(ctx context.Context, connString string, channels []string) ([]*pgx.Conn, error) {
	conns := make([]*pgx.Conn, len(channels))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(connectConcurrency)
	for i, ch := range channels {
		g.Go(func() error {
			c, err := connectListen(gctx, connString, ch)
			conns[i] = c
			return err
		})
	}
	if err := g.Wait(); err != nil {
		closeAll(conns)
		return nil, err
	}
	return conns, nil
}

func closeAll(conns []*pgx.Conn) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, connectConcurrency)
	for _, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c.Close(ctx)
			cancel()
			<-sem
		}()
	}
	wg.Wait()
}

// fanChanCap is the shared channel's buffer in the hand-written fan-ins.
const fanChanCap = 4096

// pgxFan is the usual hand-written fan-in: one goroutine per connection
// looping on WaitForNotification(context.Background()), all sending to one
// channel that the application reads.
type pgxFan struct {
	conns []*pgx.Conn
	ch    chan *pgconn.Notification
	errs  chan error
	stop  atomic.Bool
	wg    sync.WaitGroup
}

func openPgxFan(ctx context.Context, connString string, channels []string) (session, error) {
	conns, err := connectMany(ctx, connString, channels)
	if err != nil {
		return nil, err
	}
	s := &pgxFan{conns: conns, ch: make(chan *pgconn.Notification, fanChanCap), errs: make(chan error, len(conns))}
	for _, c := range conns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				x, err := c.WaitForNotification(context.Background())
				if err != nil {
					if !s.stop.Load() {
						s.errs <- err
					}
					return
				}
				s.ch <- x // close drains the channel until every sender is gone
			}
		}()
	}
	return s, nil
}

func (s *pgxFan) receive(ctx context.Context, n int, f sink) error {
	for got := 0; got < n; got++ {
		select {
		case x := <-s.ch:
			f(x.Channel, x.Payload)
		case err := <-s.errs:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (s *pgxFan) close() {
	s.stop.Store(true)
	for _, c := range s.conns {
		c.PgConn().Conn().SetReadDeadline(time.Unix(1, 0))
	}
	go func() {
		for range s.ch { // unblock senders
		}
	}()
	s.wg.Wait()
	close(s.ch)
	closeAll(s.conns)
}

// pqFan is the same with lib/pq: one Listener per connection and one
// goroutine per Listener forwarding to the shared channel.
type pqFan struct {
	ls   []*pq.Listener
	ch   chan *pq.Notification
	wg   sync.WaitGroup
	done chan struct{}
}

func openPQFan(ctx context.Context, connString string, channels []string) (session, error) {
	s := &pqFan{ls: make([]*pq.Listener, len(channels)), ch: make(chan *pq.Notification, fanChanCap), done: make(chan struct{})}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(connectConcurrency)
	for i, chn := range channels {
		g.Go(func() error {
			l, err := newPQListener(gctx, connString, chn)
			s.ls[i] = l
			return err
		})
	}
	if err := g.Wait(); err != nil {
		for _, l := range s.ls {
			if l != nil {
				l.Close()
			}
		}
		return nil, err
	}
	for _, l := range s.ls {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for x := range l.Notify {
				if x == nil {
					continue
				}
				select {
				case s.ch <- x:
				case <-s.done:
					return
				}
			}
		}()
	}
	return s, nil
}

func (s *pqFan) receive(ctx context.Context, n int, f sink) error {
	for got := 0; got < n; got++ {
		select {
		case x := <-s.ch:
			f(x.Channel, x.Extra)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (s *pqFan) close() {
	close(s.done)
	var wg sync.WaitGroup
	sem := make(chan struct{}, connectConcurrency)
	for _, l := range s.ls {
		wg.Add(1)
		sem <- struct{}{}
		go func() { defer wg.Done(); l.Close(); <-sem }()
	}
	wg.Wait()
	s.wg.Wait()
}

// pgxOnly holds K listening pgx connections that nobody reads: the idle
// scenario's baseline, pgx's own cost.
type pgxOnly struct{ conns []*pgx.Conn }

func openPgxOnly(ctx context.Context, connString string, channels []string) (session, error) {
	conns, err := connectMany(ctx, connString, channels)
	if err != nil {
		return nil, err
	}
	return &pgxOnly{conns: conns}, nil
}

func (s *pgxOnly) receive(context.Context, int, sink) error {
	return errors.New("pgx baseline: does not receive")
}

func (s *pgxOnly) close() { closeAll(s.conns) }

// selectImpls filters by the -impl flag: a comma-separated list of keys.
func selectImpls[T any](all []T, key func(T) string, filter string) []T {
	if filter == "" {
		return all
	}
	var out []T
	for _, k := range strings.Split(filter, ",") {
		for _, x := range all {
			if key(x) == strings.TrimSpace(k) {
				out = append(out, x)
			}
		}
	}
	return out
}
