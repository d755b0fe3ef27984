package main

import (
	"context"
	"fmt"
	"runtime"
	"time"
)

// runClient measures the receive rate from the fake server, which streams N
// notifications with 64-byte payloads as fast as the socket takes them, and
// the client's CPU time and heap allocations per notification.
func runClient(ctx context.Context, cfg config, res *result) error {
	n := 2_000_000
	if cfg.quick {
		n = 200_000
	}
	res.Params["notifications"] = n
	res.Params["payload_bytes"] = payloadLen
	impls := selectImpls(singleImpls, func(i impl) string { return i.key }, cfg.impls)

	fake, err := startFake()
	if err != nil {
		return err
	}
	defer fake.stop()

	samples := make([][]sample, len(impls))
	// One untimed warm-up each, so that no implementation pays for the
	// first use of shared code.
	for i, im := range impls {
		if _, err := clientTrial(ctx, fake, im, fmt.Sprintf("warm_%d", i), n/10); err != nil {
			return fmt.Errorf("%s: %w", im.name, err)
		}
	}
	for rep := range cfg.reps {
		for _, i := range turn(rep, len(impls)) {
			im := impls[i]
			s, err := clientTrial(ctx, fake, im, fmt.Sprintf("c_%d_%d", rep, i), n)
			if err != nil {
				return fmt.Errorf("%s: %w", im.name, err)
			}
			samples[i] = append(samples[i], s)
			if cfg.verbose {
				logf("client rep %d %-36s %s  %5.0f ns  %.2f allocs  %.0f B  %d GCs", rep, im.name, fmtMps(s.rate()), s.cpuPer(), s.allocsPer(), s.bytesPer(), s.gcs)
			}
		}
		logf("client: repetition %d of %d done", rep+1, cfg.reps)
	}

	for i, im := range impls {
		r := row{Key: im.key, Name: im.name, Metrics: map[string]summary{}}
		addRateMetrics(r.Metrics, samples[i])
		res.Rows = append(res.Rows, r)
	}

	t := table{head: []string{"implementation", "receive rate", "× lib/pq", "× pgproto3", "CPU ns/notif", "allocs/notif"}}
	pq := findRow(res.Rows, "", "pq")
	pp := findRow(res.Rows, "", "pgproto3")
	for _, r := range res.Rows {
		t.add(r.Name, fmtSummary(r.Metrics["rate"], fmtMps),
			ratioTo(r, pq, "rate"), ratioTo(r, pp, "rate"),
			fmtSummary(r.Metrics["cpu_ns"], fmtNs), fmtSummary(r.Metrics["allocs"], fmtAllocs))
	}
	res.Markdown = fmt.Sprintf("Client: %d notifications (64-byte payload) streamed by the fake server (child process) per trial; "+
		"median (min–max) of %d repetitions; CPU and allocations are the client process's only.\n\n%s",
		n, cfg.reps, t.String())
	return nil
}

// clientTrial opens a session, has the fake server stream n notifications
// to it, and measures their receipt.
func clientTrial(ctx context.Context, fake *fakeProc, im impl, channel string, n int) (sample, error) {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	sess, err := im.open(octx, fake.connString(), channel)
	cancel()
	if err != nil {
		return sample{}, err
	}
	defer sess.close()
	var bytes int
	f := func(_, payload string) { bytes += len(payload) }
	runtime.GC()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	m := startMeter()
	k, err := fake.command("stream %s %d", channel, n)
	if err != nil {
		return sample{}, err
	}
	if k != 1 {
		return sample{}, fmt.Errorf("fake server: %d connections listen on %s, want 1", k, channel)
	}
	if err := sess.receive(rctx, n, f); err != nil {
		return sample{}, err
	}
	s := m.stop(n)
	if bytes != n*payloadLen {
		return sample{}, fmt.Errorf("received %d payload bytes, want %d", bytes, n*payloadLen)
	}
	return s, nil
}

// findRow returns the row of key in group, or nil.
func findRow(rows []row, group, key string) *row {
	for i := range rows {
		if rows[i].Group == group && rows[i].Key == key {
			return &rows[i]
		}
	}
	return nil
}

// ratioTo prints r's median of metric over ref's.
func ratioTo(r row, ref *row, metric string) string {
	if ref == nil {
		return "—"
	}
	return fmtRatio(r.Metrics[metric].Median, ref.Metrics[metric].Median)
}
