package main

import (
	"context"
	"fmt"
	"runtime"
	"time"
)

// backlogSQL queues notifications lo..hi on a channel in one transaction,
// each with a distinct 64-byte payload (the server folds exact duplicates
// within a transaction).
const backlogSQL = `SELECT count(pg_notify($1, lpad(g::text, 64, 'x'))) FROM generate_series($2::int, $3::int) AS g`

// runBacklog measures how fast each implementation drains a real server's
// queue of N notifications that piled up while its listener was paused: a
// listening connection that nobody reads (for the Manager: a member whose
// consumer does not call Next, so its waiter parks on a full buffer).
//
// In each repetition every implementation opens its session on the same
// channel, N notifications are queued once, and then the sessions drain it
// one after the other, each timed from its first read to its N-th
// notification; the others stay paused meanwhile.
func runBacklog(ctx context.Context, cfg config, res *result) error {
	n, batch := 2_000_000, 100_000
	if cfg.quick {
		n, batch = 200_000, 50_000
	}
	res.Params["notifications"] = n
	res.Params["batch_per_tx"] = batch
	res.Params["payload_bytes"] = payloadLen
	impls := selectImpls(singleImpls, func(i impl) string { return i.key }, cfg.impls)

	cl, notifier, stop, err := startRealWithNotifier(ctx, res)
	if err != nil {
		return err
	}
	defer stop()

	samples := make([][]sample, len(impls))
	for rep := range cfg.reps {
		channel := fmt.Sprintf("backlog_%d", rep)
		sessions := make([]session, len(impls))
		for i, im := range impls {
			octx, cancel := context.WithTimeout(ctx, time.Minute)
			s, err := im.open(octx, cl.ConnString(), channel)
			cancel()
			if err != nil {
				closeSessions(sessions)
				return fmt.Errorf("%s: %w", im.name, err)
			}
			sessions[i] = s
		}
		start := time.Now()
		for lo := 1; lo <= n; lo += batch {
			if _, err := notifier.Exec(ctx, backlogSQL, channel, lo, min(lo+batch-1, n)); err != nil {
				closeSessions(sessions)
				return fmt.Errorf("queueing notifications: %w", err)
			}
		}
		logf("backlog: queued %d notifications in %v (queue usage %s)", n, time.Since(start).Round(time.Millisecond), queueUsage(ctx, notifier))
		for _, i := range turn(rep, len(impls)) {
			im := impls[i]
			var bytes int
			f := func(_, payload string) { bytes += len(payload) }
			runtime.GC()
			rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			m := startMeter()
			err := sessions[i].receive(rctx, n, f)
			s := m.stop(n)
			cancel()
			sessions[i].close()
			sessions[i] = nil
			if err == nil && bytes != n*payloadLen {
				err = fmt.Errorf("received %d payload bytes, want %d", bytes, n*payloadLen)
			}
			if err != nil {
				closeSessions(sessions)
				return fmt.Errorf("%s: %w", im.name, err)
			}
			samples[i] = append(samples[i], s)
			if cfg.verbose {
				logf("backlog rep %d %-36s %s  %5.0f ns  %.2f allocs  %.0f B  %d GCs", rep, im.name, fmtMps(s.rate()), s.cpuPer(), s.allocsPer(), s.bytesPer(), s.gcs)
			}
		}
		logf("backlog: repetition %d of %d done", rep+1, cfg.reps)
	}

	for i, im := range impls {
		r := row{Key: im.key, Name: im.name, Metrics: map[string]summary{}}
		addRateMetrics(r.Metrics, samples[i])
		res.Rows = append(res.Rows, r)
	}
	t := table{head: []string{"implementation", "drain rate", "× lib/pq", "CPU ns/notif (client)", "allocs/notif"}}
	pq := findRow(res.Rows, "", "pq")
	for _, r := range res.Rows {
		t.add(r.Name, fmtSummary(r.Metrics["rate"], fmtMps), ratioTo(r, pq, "rate"),
			fmtSummary(r.Metrics["cpu_ns"], fmtNs), fmtSummary(r.Metrics["allocs"], fmtAllocs))
	}
	res.Markdown = fmt.Sprintf("Backlog: %d notifications (64-byte payloads, %d per transaction) queued on a real server "+
		"while every listener was paused, then drained by each implementation in turn; median (min–max) of %d repetitions.\n\n%s",
		n, batch, cfg.reps, t.String())
	return nil
}

func closeSessions(ss []session) {
	for _, s := range ss {
		if s != nil {
			s.close()
		}
	}
}
