package main

// The user's condition (issue 20): how an independent harness measured the
// Manager, and how a program with signal.NotifyContext runs it. It differs
// from the backlog and client scenarios in what a user's program does:
//
//   - the consumer's ctx is cancellable (signal.NotifyContext), never
//     context.Background();
//   - the backlog is queued 100 notifications per transaction by two
//     producer connections, while the consumer is paused inside its first
//     notification (the listener was set up, and the Manager created with
//     its connection added, before anything was queued); the drain is
//     timed from the moment the consumer resumes;
//   - each implementation has its own backlog and its own session, and
//     nothing else is open while it drains;
//   - the verdict is the median of the same-repetition ratios to lib/pq.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// userImpls is the default -impl of the user scenarios: the two the
// harness compares.
const userImpls = "manager,pq"

// userCtx is the consumer's context as a program gets it from
// signal.NotifyContext, bounded by timeout.
func userCtx(parent context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	tctx, cancelT := context.WithTimeout(parent, timeout)
	sctx, stop := signal.NotifyContext(tctx, os.Interrupt)
	return sctx, func() { stop(); cancelT() }
}

// runUserBacklog drains a backlog the user's way (see the file comment).
func runUserBacklog(ctx context.Context, cfg config, res *result) error {
	n, perTx, producers := 2_000_000, 100, 2
	if cfg.quick {
		n = 200_000
	}
	res.Params["notifications"] = n
	res.Params["per_tx"] = perTx
	res.Params["producers"] = producers
	res.Params["payload_bytes"] = payloadLen
	impls := selectImpls(singleImpls, func(i impl) string { return i.key }, cmpOr(cfg.impls, userImpls))

	cl, _, stop, err := startRealWithNotifier(ctx, res)
	if err != nil {
		return err
	}
	defer stop()
	prods := make([]*pgx.Conn, producers)
	for i := range prods {
		if prods[i], err = pgx.Connect(ctx, cl.ConnString()); err != nil {
			return err
		}
		defer prods[i].Close(context.Background())
	}

	samples := make([][]sample, len(impls))
	for rep := range cfg.reps {
		for _, i := range turn(rep, len(impls)) {
			im := impls[i]
			s, err := userBacklogTrial(ctx, cl.ConnString(), prods, im, fmt.Sprintf("ub_%d_%d", rep, i), n, perTx)
			if err != nil {
				return fmt.Errorf("%s: %w", im.name, err)
			}
			samples[i] = append(samples[i], s)
			if cfg.verbose {
				logf("userbacklog rep %d %-36s %s  %5.0f ns  %.2f allocs  %.0f B  %d GCs  %d csw", rep, im.name,
					fmtMps(s.rate()), s.cpuPer(), s.allocsPer(), s.bytesPer(), s.gcs, s.csw)
			}
		}
		logf("userbacklog: repetition %d of %d done", rep+1, cfg.reps)
	}
	res.Markdown = fmt.Sprintf("User backlog: %d notifications (64-byte payloads) queued %d per transaction by %d producer "+
		"connections while the consumer was paused inside its first notification (`Next` on a `signal.NotifyContext` ctx; "+
		"one connection, one Manager with the defaults, created and the connection added before the queueing), "+
		"then drained, timed from the resume; each implementation its own backlog, nothing else open; "+
		"median (min–max) of %d repetitions; ratios: median of the same-repetition ratios.\n\n%s",
		n, perTx, producers, cfg.reps, userTable(res, impls, samples, "drain rate"))
	return nil
}

// userBacklogTrial opens a session on channel, pauses its consumer inside
// the first notification, queues n notifications perTx per transaction
// from prods, lets the server settle, resumes the consumer and times the
// drain.
func userBacklogTrial(ctx context.Context, connString string, prods []*pgx.Conn, im impl, channel string, n, perTx int) (sample, error) {
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	sess, err := im.open(octx, connString, channel)
	cancel()
	if err != nil {
		return sample{}, err
	}
	defer sess.close()

	uctx, cancel := userCtx(ctx, 5*time.Minute)
	defer cancel()
	paused, resume := make(chan struct{}), make(chan struct{})
	var bytes, got int
	f := func(_, payload string) {
		if got++; got == 1 {
			close(paused)
			<-resume
		}
		bytes += len(payload)
	}
	done := make(chan error, 1)
	go func() { done <- sess.receive(uctx, n, f) }()

	// Queue: producer p sends transactions p, p+len(prods), … so that the
	// first notification is sent before most of the backlog.
	per := n / len(prods)
	var wg sync.WaitGroup
	errs := make([]error, len(prods))
	start := time.Now()
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
	if err := errors.Join(errs...); err != nil {
		cancel()
		<-done
		return sample{}, err
	}
	select {
	case <-paused:
	case err := <-done:
		return sample{}, fmt.Errorf("receive ended before the first notification: %v", err)
	case <-time.After(time.Minute):
		cancel()
		<-done
		return sample{}, errors.New("no notification within a minute of queueing")
	}
	logf("userbacklog: %s queued %d notifications in %v", channel, n, time.Since(start).Round(time.Millisecond))
	// The server idle: the listener's backend has written what the
	// socket takes and waits.
	time.Sleep(time.Second)
	runtime.GC()
	b0 := batchesOf(sess)
	stopProfile := profileDrain(channel, im.key)
	m := startMeter()
	close(resume)
	err = <-done
	s := m.stop(n)
	stopProfile()
	if err == nil && bytes != n*payloadLen {
		err = fmt.Errorf("received %d payload bytes, want %d", bytes, n*payloadLen)
	}
	if b := batchesOf(sess) - b0; b > 0 {
		logf("userbacklog: %s: %d batches, %.0f notifications a batch", im.name, b, float64(n)/float64(b))
	}
	return s, err
}

// drainProfile is -drainprofile: a CPU profile of each userbacklog drain
// (from the resume to the last notification) goes to PREFIX-KEY-CHANNEL.prof.
var drainProfile string

// profileDrain starts a drain's CPU profile, if asked, and returns what
// stops it.
func profileDrain(channel, key string) func() {
	if drainProfile == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s-%s-%s.prof", drainProfile, key, channel))
	if err != nil {
		logf("drain profile: %v", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		logf("drain profile: %v (not with -cpuprofile)", err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// batchesOf returns the Batch events a Manager session yielded so far,
// and 0 for the other sessions.
func batchesOf(s session) uint64 {
	if ms, ok := s.(*managerSession); ok {
		return ms.m.Stats().Batches
	}
	return 0
}

// runUserClient is the client scenario with the consumer's ctx from
// signal.NotifyContext, and the verdict a median of same-repetition ratios.
func runUserClient(ctx context.Context, cfg config, res *result) error {
	n := 2_000_000
	if cfg.quick {
		n = 200_000
	}
	res.Params["notifications"] = n
	res.Params["payload_bytes"] = payloadLen
	impls := selectImpls(singleImpls, func(i impl) string { return i.key }, cmpOr(cfg.impls, userImpls))

	fake, err := startFake()
	if err != nil {
		return err
	}
	defer fake.stop()

	samples := make([][]sample, len(impls))
	for rep := range cfg.reps {
		for _, i := range turn(rep, len(impls)) {
			im := impls[i]
			s, err := userClientTrial(ctx, fake, im, fmt.Sprintf("uc_%d_%d", rep, i), n)
			if err != nil {
				return fmt.Errorf("%s: %w", im.name, err)
			}
			samples[i] = append(samples[i], s)
			if cfg.verbose {
				logf("userclient rep %d %-36s %s  %5.0f ns  %.2f allocs  %.0f B  %d GCs  %d csw", rep, im.name,
					fmtMps(s.rate()), s.cpuPer(), s.allocsPer(), s.bytesPer(), s.gcs, s.csw)
			}
		}
		logf("userclient: repetition %d of %d done", rep+1, cfg.reps)
	}
	res.Markdown = fmt.Sprintf("User client: %d notifications (64-byte payload) streamed by the fake server (child process) "+
		"to one listening connection per trial, the consumer on a `signal.NotifyContext` ctx, a new session per trial, no warm-up; "+
		"median (min–max) of %d repetitions; ratios: median of the same-repetition ratios; CPU and allocations are the client process's only.\n\n%s",
		n, cfg.reps, userTable(res, impls, samples, "receive rate"))
	return nil
}

// userClientTrial is clientTrial with the consumer on a user's ctx.
func userClientTrial(ctx context.Context, fake *fakeProc, im impl, channel string, n int) (sample, error) {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	sess, err := im.open(octx, fake.connString(), channel)
	cancel()
	if err != nil {
		return sample{}, err
	}
	defer sess.close()
	var bytes int
	f := func(_, payload string) { bytes += len(payload) }
	uctx, cancel := userCtx(ctx, 2*time.Minute)
	defer cancel()
	runtime.GC()
	m := startMeter()
	k, err := fake.command("stream %s %d", channel, n)
	if err != nil {
		return sample{}, err
	}
	if k != 1 {
		return sample{}, fmt.Errorf("fake server: %d connections listen on %s, want 1", k, channel)
	}
	if err := sess.receive(uctx, n, f); err != nil {
		return sample{}, err
	}
	s := m.stop(n)
	if bytes != n*payloadLen {
		return sample{}, fmt.Errorf("received %d payload bytes, want %d", bytes, n*payloadLen)
	}
	return s, nil
}

// userTable records the rows in res and returns their table: medians, and
// each implementation's median of its same-repetition ratios to lib/pq.
func userTable(res *result, impls []impl, samples [][]sample, rateHead string) string {
	pq := slices.IndexFunc(impls, func(i impl) bool { return i.key == "pq" })
	t := table{head: []string{"implementation", rateHead, "× lib/pq (same-rep.)", "per-rep. ratios",
		"CPU ns/notif", "allocs/notif", "B/notif", "GC cycles"}}
	for i, im := range impls {
		r := row{Key: im.key, Name: im.name, Metrics: map[string]summary{}}
		addRateMetrics(r.Metrics, samples[i])
		ratio, each := "—", "—"
		if pq >= 0 {
			var rs []float64
			for k := range samples[i] {
				rs = append(rs, samples[i][k].rate()/samples[pq][k].rate())
			}
			r.Metrics["ratio_pq"] = summarize(rs)
			ratio = fmt.Sprintf("%.2f×", r.Metrics["ratio_pq"].Median)
			each = ""
			for k, x := range rs {
				if k > 0 {
					each += ", "
				}
				each += fmt.Sprintf("%.2f", x)
			}
		}
		res.Rows = append(res.Rows, r)
		t.add(im.name, fmtSummary(r.Metrics["rate"], fmtMps), ratio, each,
			fmtSummary(r.Metrics["cpu_ns"], fmtNs), fmtSummary(r.Metrics["allocs"], fmtAllocs),
			fmt.Sprintf("%.0f", r.Metrics["bytes"].Median), fmt.Sprintf("%.0f", r.Metrics["gcs"].Median))
	}
	return t.String()
}

// cmpOr returns a, or b when a is empty.
func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
