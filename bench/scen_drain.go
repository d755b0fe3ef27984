package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/seed-c59d106d/pgnotify"
)

// drainKs are the connection counts of the drain scenario.
var drainKs = []int{100, 1000}

// drainImpl makes drain passes over a set of connections: one round trip on
// each, collecting every notification committed before the pass.
type drainImpl struct {
	key  string
	name string
	// start takes the connections and returns a pass function and a stop
	// function that hands them back, open and idle.
	start func(ctx context.Context, conns []*pgx.Conn) (pass func(context.Context) (int, error), stop func() error, err error)
}

// drainImpls are the drain scenario's implementations, in table order.
var drainImpls = []drainImpl{
	{key: "manager", name: "pgnotify Manager.Drain", start: startManagerDrain},
	{key: "seq", name: "sequential loop (Ping each)", start: startLoopDrain(1)},
	{key: "errgroup", name: "errgroup(64) loop (Ping each)", start: startLoopDrain(64)},
}

// roundTripTimeout bounds one round trip in the hand-written loops, as a
// careful user would.
const roundTripTimeout = 10 * time.Second

func startManagerDrain(ctx context.Context, conns []*pgx.Conn) (func(context.Context) (int, error), func() error, error) {
	m := pgnotify.NewManager()
	if err := m.Add(ctx, conns...); err != nil {
		return nil, nil, err
	}
	pass := func(ctx context.Context) (int, error) {
		evs, err := m.Drain(ctx)
		n := 0
		for _, ev := range evs {
			n += len(ev.Notifications)
			if ev.Kind == pgnotify.Dead {
				return n, fmt.Errorf("connection died: %w", ev.Err)
			}
		}
		return n, err
	}
	stop := func() error {
		err := m.Remove(context.Background(), conns...)
		// Remove hands back the connections; the Manager holds nothing else.
		m.Close(context.Background())
		return err
	}
	return pass, stop, nil
}

// popBuffered takes what pgx buffered on conn, without I/O (pgx returns a
// buffered notification before it looks at a done context).
func popBuffered(conn *pgx.Conn, into []*pgconn.Notification) []*pgconn.Notification {
	for {
		n, err := conn.WaitForNotification(doneCtx)
		if n == nil || err != nil {
			return into
		}
		into = append(into, n)
	}
}

var doneCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// startLoopDrain is the hand-written drain: a Ping (the server sends every
// pending notification before its ReadyForQuery) on each connection, then
// what pgx buffered, limit round trips at a time (1: a sequential loop).
func startLoopDrain(limit int) func(ctx context.Context, conns []*pgx.Conn) (func(context.Context) (int, error), func() error, error) {
	return func(ctx context.Context, conns []*pgx.Conn) (func(context.Context) (int, error), func() error, error) {
		got := make([][]*pgconn.Notification, len(conns))
		one := func(ctx context.Context, i int) error {
			rctx, cancel := context.WithTimeout(ctx, roundTripTimeout)
			defer cancel()
			err := conns[i].PgConn().Ping(rctx)
			got[i] = popBuffered(conns[i], got[i][:0])
			return err
		}
		pass := func(ctx context.Context) (int, error) {
			if limit == 1 {
				for i := range conns {
					if err := one(ctx, i); err != nil {
						return 0, err
					}
				}
			} else {
				g, gctx := errgroup.WithContext(ctx)
				g.SetLimit(limit)
				for i := range conns {
					g.Go(func() error { return one(gctx, i) })
				}
				if err := g.Wait(); err != nil {
					return 0, err
				}
			}
			n := 0
			for _, ns := range got {
				n += len(ns)
			}
			return n, nil
		}
		return pass, func() error { return nil }, nil
	}
}

// runDrain times drain passes over K idle real connections: pgnotify's
// Manager.Drain against a sequential loop and an errgroup(64) loop of
// round trips on the same connections, interleaved.
func runDrain(ctx context.Context, cfg config, res *result) error {
	passes := map[int]int{100: 50, 1000: 20}
	if cfg.quick {
		passes = map[int]int{100: 10, 1000: 5}
	}
	res.Params["passes_per_trial"] = passes
	impls := selectImpls(drainImpls, func(i drainImpl) string { return i.key }, cfg.impls)

	cl, err := startReal(ctx, res)
	if err != nil {
		return err
	}
	defer stopReal(cl)

	for _, k := range drainKs {
		channels := make([]string, k)
		for i := range channels {
			channels[i] = "drain_" + strconv.Itoa(i)
		}
		octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		conns, err := connectMany(octx, cl.ConnString(), channels)
		cancel()
		if err != nil {
			return err
		}
		perRep := make([][]float64, len(impls)) // median pass, ms, per repetition
		for rep := range cfg.reps {
			for i, im := range impls {
				pass, stop, err := im.start(ctx, conns)
				if err != nil {
					closeAll(conns)
					return fmt.Errorf("%s: %w", im.name, err)
				}
				// One untimed pass: the first round trip on a connection
				// pays for things later ones don't.
				_, err = pass(ctx)
				var ms []float64
				for p := 0; p < passes[k] && err == nil; p++ {
					t := time.Now()
					_, err = pass(ctx)
					ms = append(ms, float64(time.Since(t))/float64(time.Millisecond))
				}
				if serr := stop(); err == nil {
					err = serr
				}
				if err != nil {
					closeAll(conns)
					return fmt.Errorf("drain over %d connections, %s: %w", k, im.name, err)
				}
				slices.Sort(ms)
				perRep[i] = append(perRep[i], median(ms))
				if cfg.verbose {
					logf("drain K=%d rep %d %-32s median %.2f ms (min %.2f, max %.2f)", k, rep, im.name, median(ms), ms[0], ms[len(ms)-1])
				}
			}
		}
		closeAll(conns)
		logf("drain: K=%d done", k)
		for i, im := range impls {
			res.Rows = append(res.Rows, row{Group: fmt.Sprintf("K=%d", k), Key: im.key, Name: im.name,
				Metrics: map[string]summary{"pass_ms": summarize(perRep[i])}})
		}
	}

	t := table{head: []string{"K", "implementation", "drain pass", "× errgroup(64)", "× sequential"}}
	for _, k := range drainKs {
		group := fmt.Sprintf("K=%d", k)
		eg := findRow(res.Rows, group, "errgroup")
		seq := findRow(res.Rows, group, "seq")
		for _, r := range res.Rows {
			if r.Group == group {
				t.add(strconv.Itoa(k), r.Name, fmtSummary(r.Metrics["pass_ms"], fmtMs), ratioTo(r, eg, "pass_ms"), ratioTo(r, seq, "pass_ms"))
			}
		}
	}
	var ps []string
	for _, k := range drainKs {
		ps = append(ps, fmt.Sprintf("%d passes at K=%d", passes[k], k))
	}
	res.Markdown = fmt.Sprintf("Drain: one pass = a round trip on each of K idle connections to a real server (each listening on its own channel), "+
		"collecting what they received. Each trial makes %s after one untimed pass; the value of a repetition is its median pass; "+
		"median (min–max) over %d repetitions. Lower is better; the ratios are to the hand-written loops on the same connections.\n\n%s",
		strings.Join(ps, " and "), cfg.reps, t.String())
	return nil
}
