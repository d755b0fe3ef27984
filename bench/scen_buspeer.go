package main

// The Bus beside the peer users would pick instead (issue 20 item 3):
// github.com/jackc/pgxlisten with the smallest fair fan-out a user would
// write for it, on a real server, at K = 1, 50 and 1000 subscribers, in
// the same run. It is part of the bus scenario, and runs alone as
// buspeer.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"
)

// busPeerKs are the subscriber counts of the pgxlisten comparison.
var busPeerKs = []int{1, 50, 1000}

const busKeyPgxlisten = "pgxlisten"

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

// busPeerNotifies is how many NOTIFYs one trial sends at K subscribers.
func busPeerNotifies(cfg config, k int) int {
	m := map[int]int{1: 100_000, 50: 20_000, 1000: 2_000}[k]
	if cfg.quick {
		m /= 10
	}
	return m
}

// busPeerTrials runs the Bus and pgxlisten, interleaved, at each K.
func busPeerTrials(ctx context.Context, cfg config, res *result, url string, notifier *pgx.Conn) error {
	connect := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, url) }
	for _, k := range busPeerKs {
		m := busPeerNotifies(cfg, k)
		samples := map[string][]sample{}
		for rep := range cfg.reps {
			for _, key := range []string{busKeyBus, busKeyPgxlisten} {
				channel := fmt.Sprintf("bp%d_%d_%s", k, rep, key)
				var s sample
				var err error
				if key == busKeyBus {
					s, err = busRealTrial(ctx, connect, notifier, channel, k, m)
				} else {
					s, err = pgxlistenTrial(ctx, url, notifier, channel, k, m)
				}
				if err != nil {
					return fmt.Errorf("peer K=%d %s: %w", k, key, err)
				}
				samples[key] = append(samples[key], s)
				if cfg.verbose {
					logf("bus peer K=%d %-9s rep %d %s deliveries/s  %5.0f ns/delivery", k, key, rep, fmtRate(s.rate()), s.cpuPer())
				}
			}
		}
		logf("bus: pgxlisten K=%d done", k)
		for _, key := range []string{busKeyBus, busKeyPgxlisten} {
			name := "pgnotify Bus"
			if key == busKeyPgxlisten {
				name = "pgxlisten + fan-out"
			}
			r := row{Group: fmt.Sprintf("peer K=%d", k), Key: key, Name: name, Metrics: map[string]summary{}}
			addRateMetrics(r.Metrics, samples[key])
			res.Rows = append(res.Rows, r)
		}
		ratios := make([]float64, len(samples[busKeyBus]))
		for i := range ratios {
			ratios[i] = samples[busKeyBus][i].rate() / samples[busKeyPgxlisten][i].rate()
		}
		res.Rows = append(res.Rows, row{Group: fmt.Sprintf("peer K=%d", k), Key: "ratio", Name: "Bus / pgxlisten",
			Metrics: map[string]summary{"ratio": summarize(ratios)}})
	}
	return nil
}

// pgxlistenTrial measures what a user would write with pgxlisten: one
// Listener on its own connection whose handler hands each notification to
// K subscribers' buffered Go channels (a blocking send: lossless, as the
// Bus's OverflowBlock), each read by its own goroutine; m NOTIFYs on
// channel. pgxlisten says nothing when its LISTEN is active, so the trial
// first NOTIFYs a probe channel until its handler sees one.
func pgxlistenTrial(ctx context.Context, url string, notifier *pgx.Conn, channel string, k, m int) (sample, error) {
	subs := make([]chan *pgconn.Notification, k)
	for i := range subs {
		subs[i] = make(chan *pgconn.Notification, 1024)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan struct{})
	var once sync.Once
	l := &pgxlisten.Listener{
		Connect:        func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, url) },
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
	defer func() {
		cancel()
		<-listening
	}()
	probe := time.NewTicker(20 * time.Millisecond)
	defer probe.Stop()
	for waiting := true; waiting; {
		if _, err := notifier.Exec(ctx, "select pg_notify($1, 'probe')", channel+"_ready"); err != nil {
			return sample{}, err
		}
		select {
		case <-ready:
			waiting = false
		case <-probe.C:
		case <-ctx.Done():
			return sample{}, ctx.Err()
		}
	}

	var wg sync.WaitGroup
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer rcancel()
	errs := make(chan error, k)
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
	runtime.GC()
	meter := startMeter()
	if err := produce(ctx, notifier, channel, m); err != nil {
		rcancel()
		wg.Wait()
		return sample{}, err
	}
	wg.Wait()
	s := meter.stop(m * k)
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	if err := errors.Join(all...); err != nil {
		return sample{}, err
	}
	return s, nil
}

// busPeerMarkdown writes the comparison's table.
func busPeerMarkdown(cfg config, res *result) string {
	t := table{head: []string{"K", "implementation", "NOTIFYs", "deliveries/s", "Bus / pgxlisten (per repetition)", "client CPU ns/delivery", "allocs/delivery"}}
	for _, k := range busPeerKs {
		group := fmt.Sprintf("peer K=%d", k)
		ratio := findRow(res.Rows, group, "ratio")
		for _, key := range []string{busKeyBus, busKeyPgxlisten} {
			r := findRow(res.Rows, group, key)
			times := ""
			if key == busKeyPgxlisten && ratio != nil {
				times = fmtSummary(ratio.Metrics["ratio"], fmtRatioV)
			}
			t.add(strconv.Itoa(k), r.Name, strconv.Itoa(busPeerNotifies(cfg, k)), fmtSummary(r.Metrics["rate"], fmtRate), times,
				fmtSummary(r.Metrics["cpu_ns"], fmtF1), fmtSummary(r.Metrics["allocs"], fmtAllocs3))
		}
	}
	return fmt.Sprintf("The Bus beside github.com/jackc/pgxlisten, real server: K subscribers on one channel, a producer sends a fixed number "+
		"of NOTIFYs, one per committed transaction (50 per simple-query message), 64-byte payloads; deliveries/s = NOTIFYs × K / the time "+
		"from the first send to the last delivery. Bus: K subscriptions (OverflowBlock, lossless), each read by its own goroutine. "+
		"pgxlisten: one Listener whose handler sends each notification to K buffered Go channels (1024 each; a blocking send: "+
		"lossless), each read by its own goroutine. Interleaved within each repetition; median (min–max) of %d repetitions; "+
		"client CPU is this process's.\n\n%s", cfg.reps, t.String())
}
