package main

// The Bus beside the peer users would pick instead (issue 20 item 3):
// github.com/jackc/pgxlisten with the smallest fair fan-out a user would
// write for it, on a real server, at K = 1, 50 and 1000 subscribers, in
// the same run. It is part of the bus scenario, and runs alone as
// buspeer.
//
// The libraries, not the producer, must be the bottleneck: one NOTIFY per
// committed transaction cannot outrun either. So each side's listening
// connection is dialled through a gate (a net.Conn whose reads wait while
// it is held): the listeners are set up and their readers started, the
// gates close, two producer connections queue the backlog, 100 distinct
// NOTIFYs per transaction, and then each side in turn has its gate opened
// and its drain timed, from the opening to the last delivery. The server
// then only streams its queue, and every side reads the same backlog
// through the same kind of socket.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"

	"github.com/seed-c59d106d/pgnotify/bus"
)

// busPeerKs are the subscriber counts of the pgxlisten comparison.
var busPeerKs = []int{1, 50, 1000}

// The sides of the comparison, in the order they take turns; -impl picks
// some of them.
const (
	busKeyPgxlisten = "pgxlisten"
	busKeyBusDrop   = "busdrop"
)

// busPeerSide is one implementation of the comparison.
type busPeerSide struct {
	key, name string
	// open sets the side up on channel, its connection dialled through g,
	// with k readers each expecting m notifications; wait returns once
	// every reader has them all.
	open func(ctx context.Context, cfg *pgx.ConnConfig, g *gate, channel string, k, m int) (wait func() error, close func(), err error)
}

var busPeerSides = []busPeerSide{
	{busKeyBus, "pgnotify Bus, OverflowBlock", busPeerOpenBus(bus.OverflowBlock)},
	{busKeyBusDrop, "pgnotify Bus, OverflowDropOldest, buffer m", busPeerOpenBus(bus.OverflowDropOldest)},
	{busKeyPgxlisten, "pgxlisten + fan-out", busPeerOpenPgxlisten},
}

// busPeerPerTx and busPeerProducers shape the queueing: distinct payloads
// (the server folds identical ones within a transaction).
const busPeerPerTx, busPeerProducers = 100, 2

// runBusPeer is the buspeer scenario: the comparison alone.
func runBusPeer(ctx context.Context, cfg config, res *result) error {
	cl, notifier, stop, err := startRealWithNotifier(ctx, res)
	if err != nil {
		return err
	}
	defer stop()
	if err := busPeerTrials(ctx, cfg, res, cl.ConnString(), notifier); err != nil {
		return err
	}
	res.Markdown = busPeerMarkdown(cfg, res)
	return nil
}

// busPeerNotifies is how many notifications one backlog holds at K
// subscribers: the 1,000,000 at K = 50, fewer at K = 1000 so that
// a drain stays within a minute.
func busPeerNotifies(cfg config, k int) int {
	m := map[int]int{1: 1_000_000, 50: 1_000_000, 1000: 50_000}[k]
	if cfg.quick {
		m /= 10
	}
	return m
}

// busPeerTrials runs the sides at each K: per repetition, every side
// listens on one channel behind a held gate, one backlog is queued, and
// the sides drain it in turn (the order rotating with the repetition).
func busPeerTrials(ctx context.Context, cfg config, res *result, url string, notifier *pgx.Conn) error {
	sides := selectImpls(busPeerSides, func(s busPeerSide) string { return s.key }, cfg.impls)
	if len(sides) == 0 {
		sides = busPeerSides
	}
	pcfg, err := pgx.ParseConfig(url)
	if err != nil {
		return err
	}
	prods := make([]*pgx.Conn, busPeerProducers)
	for i := range prods {
		if prods[i], err = pgx.Connect(ctx, url); err != nil {
			return err
		}
		defer prods[i].Close(context.Background())
	}
	res.Params["buspeer_per_tx"] = busPeerPerTx
	res.Params["buspeer_producers"] = busPeerProducers
	for _, k := range busPeerKs {
		m := busPeerNotifies(cfg, k)
		samples := map[string][]sample{}
		for rep := range cfg.reps {
			channel := fmt.Sprintf("bp%d_%d", k, rep)
			ss, err := busPeerRep(ctx, cfg, pcfg, prods, sides, channel, rep, k, m)
			if err != nil {
				return fmt.Errorf("peer K=%d: %w", k, err)
			}
			for i, s := range ss {
				samples[sides[i].key] = append(samples[sides[i].key], s)
			}
		}
		logf("bus: pgxlisten K=%d done", k)
		group := fmt.Sprintf("peer K=%d", k)
		for _, sd := range sides {
			r := row{Group: group, Key: sd.key, Name: sd.name, Metrics: map[string]summary{}}
			addRateMetrics(r.Metrics, samples[sd.key])
			peer := samples[busKeyPgxlisten]
			if sd.key != busKeyPgxlisten && len(peer) == len(samples[sd.key]) {
				rates, cpus := make([]float64, len(peer)), make([]float64, len(peer))
				for i, s := range samples[sd.key] {
					rates[i] = s.rate() / peer[i].rate()
					cpus[i] = s.cpuPer() / peer[i].cpuPer()
				}
				r.Metrics["ratio"] = summarize(rates)
				r.Metrics["cpu_ratio"] = summarize(cpus)
			}
			res.Rows = append(res.Rows, r)
		}
	}
	return nil
}

// busPeerRep is one repetition at K: it returns one sample per side.
func busPeerRep(ctx context.Context, cfg config, pcfg *pgx.ConnConfig, prods []*pgx.Conn, sides []busPeerSide, channel string, rep, k, m int) ([]sample, error) {
	gates := make([]*gate, len(sides))
	waits := make([]func() error, len(sides))
	for i, sd := range sides {
		gates[i] = newGate()
		octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		wait, closeSide, err := sd.open(octx, pcfg, gates[i], channel, k, m)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", sd.name, err)
		}
		defer closeSide()
		waits[i] = wait
	}
	for _, g := range gates {
		g.hold()
	}
	start := time.Now()
	if err := queueBacklog(ctx, prods, channel, m, busPeerPerTx); err != nil {
		for _, g := range gates {
			g.release()
		}
		return nil, err
	}
	logf("bus peer: %s queued %d notifications in %v", channel, m, time.Since(start).Round(time.Millisecond))
	out := make([]sample, len(sides))
	for _, i := range turn(rep, len(sides)) {
		runtime.GC()
		meter := startMeter()
		gates[i].release()
		err := waits[i]()
		out[i] = meter.stop(m * k)
		if err != nil {
			for _, g := range gates {
				g.release()
			}
			return nil, fmt.Errorf("%s: %w", sides[i].name, err)
		}
		if cfg.verbose {
			s := out[i]
			logf("bus peer K=%d %-9s rep %d %s deliveries/s  %5.0f ns/delivery  %.3f allocs  %d GCs", k, sides[i].key, rep,
				fmtRate(s.rate()), s.cpuPer(), s.allocsPer(), s.gcs)
		}
	}
	return out, nil
}

// queueBacklog queues notifications 1..n on channel, perTx per
// transaction, from the producer connections in parallel.
func queueBacklog(ctx context.Context, prods []*pgx.Conn, channel string, n, perTx int) error {
	per := n / len(prods)
	var wg sync.WaitGroup
	errs := make([]error, len(prods))
	for p, conn := range prods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lo, hi := 1+p*per, (p+1)*per
			if p == len(prods)-1 {
				hi = n
			}
			for ; lo <= hi; lo += perTx {
				if _, err := conn.Exec(ctx, backlogSQL, channel, lo, min(lo+perTx-1, hi)); err != nil {
					errs[p] = fmt.Errorf("queueing notifications: %w", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// busPeerOpenBus sets up a Bus with K subscriptions of policy p on
// channel. Under OverflowDropOldest the buffer is m, so that nothing is
// lost (the ring grows only as far as the readers fall behind). The health
// check is off: a ping sent while the gate is held would time out, and
// pgxlisten has none.
func busPeerOpenBus(p bus.Overflow) func(ctx context.Context, cfg *pgx.ConnConfig, g *gate, channel string, k, m int) (func() error, func(), error) {
	return func(ctx context.Context, cfg *pgx.ConnConfig, g *gate, channel string, k, m int) (func() error, func(), error) {
		gcfg := g.config(cfg)
		bs := bus.New(func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, gcfg.Copy()) },
			bus.WithHealthCheck(0, 10*time.Second))
		opts := []bus.SubscribeOption{bus.WithOverflow(p)}
		if p == bus.OverflowDropOldest {
			opts = append(opts, bus.WithBuffer(m))
		}
		ss, err := subscribeMany(ctx, bs, k, func(int) string { return channel }, opts...)
		if err != nil {
			closeBus(bs)
			return nil, nil, err
		}
		rd := startReaders(context.Background(), ss, m)
		return rd.wait, func() {
			g.release()
			rd.stop()
			closeBus(bs)
		}, nil
	}
}

// busPeerOpenPgxlisten sets up what a user would write with pgxlisten: one
// Listener on its own connection whose handler hands each notification to
// K subscribers' buffered Go channels (a blocking send: lossless, as the
// Bus's OverflowBlock), each read by its own goroutine. pgxlisten says
// nothing when its LISTEN is active, so it first NOTIFYs a probe channel
// until its handler sees one.
func busPeerOpenPgxlisten(ctx context.Context, cfg *pgx.ConnConfig, g *gate, channel string, k, m int) (func() error, func(), error) {
	subs := make([]chan *pgconn.Notification, k)
	for i := range subs {
		subs[i] = make(chan *pgconn.Notification, 1024)
	}
	lctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	var once sync.Once
	gcfg := g.config(cfg)
	l := &pgxlisten.Listener{
		Connect:        func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, gcfg.Copy()) },
		ReconnectDelay: 100 * time.Millisecond,
	}
	l.Handle(channel+"_ready", pgxlisten.HandlerFunc(func(context.Context, *pgconn.Notification, *pgx.Conn) error {
		once.Do(func() { close(ready) })
		return nil
	}))
	l.Handle(channel, pgxlisten.HandlerFunc(func(ctx context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
		for _, c := range subs {
			select {
			case c <- n:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}))
	listening := make(chan error, 1)
	go func() { listening <- l.Listen(lctx) }()

	var wg sync.WaitGroup
	rctx, rcancel := context.WithCancel(context.Background())
	errs := make(chan error, k)
	closeSide := func() {
		g.release()
		rcancel()
		cancel()
		<-listening
		wg.Wait()
	}
	probeConn, err := pgx.ConnectConfig(ctx, cfg.Copy())
	if err != nil {
		closeSide()
		return nil, nil, err
	}
	defer probeConn.Close(context.Background())
	probe := time.NewTicker(20 * time.Millisecond)
	defer probe.Stop()
	for waiting := true; waiting; {
		if _, err := probeConn.Exec(ctx, "select pg_notify($1, 'probe')", channel+"_ready"); err != nil {
			closeSide()
			return nil, nil, err
		}
		select {
		case <-ready:
			waiting = false
		case <-probe.C:
		case <-ctx.Done():
			closeSide()
			return nil, nil, ctx.Err()
		}
	}
	for _, c := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range m {
				select {
				case <-c:
				case <-rctx.Done():
					errs <- rctx.Err()
					return
				}
			}
		}()
	}
	wait := func() error {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			rcancel()
			<-done
		}
		select {
		case err := <-errs:
			return err
		default:
			return nil
		}
	}
	return wait, closeSide, nil
}

// A gate holds a connection's reads: while held, Read waits until release
// (or until a deadline set on the connection has passed, so that pgx can
// still interrupt a read).
type gate struct {
	held atomic.Bool
	mu   sync.Mutex
	open chan struct{} // closed by release
}

func newGate() *gate { return &gate{open: make(chan struct{})} }

func (g *gate) hold() { g.held.Store(true) }

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held.Load() {
		g.held.Store(false)
		close(g.open)
	}
}

// config returns a copy of cfg whose connections are dialled through g.
func (g *gate) config(cfg *pgx.ConnConfig) *pgx.ConnConfig {
	c := cfg.Copy()
	dial := c.DialFunc
	c.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &gatedConn{Conn: conn, g: g, kick: make(chan struct{}, 1)}, nil
	}
	return c
}

// gatedConn is a net.Conn behind a gate.
type gatedConn struct {
	net.Conn
	g        *gate
	kick     chan struct{} // cap 1: a deadline changed
	deadline atomic.Int64  // read deadline, UnixNano; 0: none
}

func (c *gatedConn) Read(p []byte) (int, error) {
	for c.g.held.Load() {
		if d := c.deadline.Load(); d != 0 && time.Now().UnixNano() >= d {
			break // the real Read reports the timeout
		}
		select {
		case <-c.g.open:
		case <-c.kick:
		}
	}
	return c.Conn.Read(p)
}

func (c *gatedConn) setDeadline(t time.Time) {
	var d int64
	if !t.IsZero() {
		d = t.UnixNano()
	}
	c.deadline.Store(d)
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *gatedConn) SetDeadline(t time.Time) error {
	c.setDeadline(t)
	return c.Conn.SetDeadline(t)
}

func (c *gatedConn) SetReadDeadline(t time.Time) error {
	c.setDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

// busPeerMarkdown writes the comparison's table.
func busPeerMarkdown(cfg config, res *result) string {
	t := table{head: []string{"K", "implementation", "backlog", "deliveries/s", "÷ pgxlisten (per repetition)", "client CPU ns/delivery", "CPU ÷ pgxlisten", "allocs/delivery"}}
	for _, k := range busPeerKs {
		group := fmt.Sprintf("peer K=%d", k)
		for _, sd := range busPeerSides {
			r := findRow(res.Rows, group, sd.key)
			if r == nil {
				continue
			}
			ratio, cpuRatio := "", ""
			if s, ok := r.Metrics["ratio"]; ok {
				ratio = fmtSummary(s, fmtRatioV)
				cpuRatio = fmtSummary(r.Metrics["cpu_ratio"], fmtRatioV)
			}
			t.add(strconv.Itoa(k), r.Name, strconv.Itoa(busPeerNotifies(cfg, k)), fmtSummary(r.Metrics["rate"], fmtRate), ratio,
				fmtSummary(r.Metrics["cpu_ns"], fmtF1), cpuRatio, fmtSummary(r.Metrics["allocs"], fmtAllocs3))
		}
	}
	return fmt.Sprintf("The Bus beside github.com/jackc/pgxlisten, real server: K subscribers on one channel; each side's listening "+
		"connection is dialled through a gate that holds its reads; with every side listening and its readers started, the gates "+
		"close, %d producer connections queue the backlog %d distinct 64-byte NOTIFYs per transaction, and each side in turn has its "+
		"gate opened and its drain timed, to the last delivery (deliveries/s = backlog × K / drain time). Bus: `bus.New` with the "+
		"health check off (a ping during the hold would time out; pgxlisten has none), K subscriptions each read by its own "+
		"goroutine: OverflowBlock (lossless), and the default OverflowDropOldest with `WithBuffer(backlog)` so that nothing is lost. "+
		"pgxlisten: one Listener whose handler sends each notification to K buffered Go channels (1024 each; a blocking send: "+
		"lossless), each read by its own goroutine. Order rotated per repetition; median (min–max) of %d repetitions; ratios are "+
		"the same-repetition ratios' median; client CPU is this process's (getrusage).\n\n%s",
		busPeerProducers, busPeerPerTx, cfg.reps, t.String())
}
