package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// latencyStats are one trial's percentiles.
type latencyStats struct {
	p50, p99, max time.Duration
	n             int
}

func latencyOf(lat []time.Duration) latencyStats {
	slices.Sort(lat)
	return latencyStats{p50: percentile(lat, 50), p99: percentile(lat, 99), max: lat[len(lat)-1], n: len(lat)}
}

// warmupFraction of each trial's first notifications is not counted: the
// first ones pay for waking an idle path and growing buffers.
const warmupFraction = 50 // 1/50 = 2%

// runLatency measures NOTIFY→application latency on a real server: a
// notifier connection in this process sends one NOTIFY per transaction at a
// fixed rate, stamping each with its send time (monotonic clock) just before
// the round trip; the application subtracts it from the time it receives
// the notification. Only one implementation listens at a time.
func runLatency(ctx context.Context, cfg config, res *result) error {
	perSec, dur := 2000.0, 5*time.Second
	if cfg.quick {
		dur = 2 * time.Second
	}
	n := int(perSec * dur.Seconds())
	res.Params["rate_per_sec"] = perSec
	res.Params["notifications_per_trial"] = n
	res.Params["warmup_skipped"] = n / warmupFraction
	impls := selectImpls(singleImpls, func(i impl) string { return i.key }, cfg.impls)

	cl, notifier, stop, err := startRealWithNotifier(ctx, res)
	if err != nil {
		return err
	}
	defer stop()

	stats := make([][]latencyStats, len(impls))
	for rep := range cfg.reps {
		for _, i := range turn(rep, len(impls)) {
			im := impls[i]
			st, err := latencyTrial(ctx, cl.ConnString(), notifier, im, fmt.Sprintf("lat_%d_%d", rep, i), n, perSec)
			if err != nil {
				return fmt.Errorf("%s: %w", im.name, err)
			}
			stats[i] = append(stats[i], st)
			if cfg.verbose {
				logf("latency rep %d %-36s p50 %v p99 %v max %v", rep, im.name, st.p50, st.p99, st.max)
			}
		}
		logf("latency: repetition %d of %d done", rep+1, cfg.reps)
	}

	for i, im := range impls {
		r := row{Key: im.key, Name: im.name, Metrics: map[string]summary{}}
		var p50, p99, mx []float64
		for _, s := range stats[i] {
			p50 = append(p50, us(s.p50))
			p99 = append(p99, us(s.p99))
			mx = append(mx, us(s.max))
		}
		r.Metrics["p50_us"] = summarize(p50)
		r.Metrics["p99_us"] = summarize(p99)
		r.Metrics["max_us"] = summarize(mx)
		res.Rows = append(res.Rows, r)
	}
	pgxCtx := findRow(res.Rows, "", "pgx")
	pgxBg := findRow(res.Rows, "", "pgxbg")
	pq := findRow(res.Rows, "", "pq")
	t := table{head: []string{"implementation", "p50", "p99", "max", "p50 × pgx(ctx)", "p99 × pgx(ctx)",
		"p50 × pgx(Bg)", "p99 × pgx(Bg)", "p50 × lib/pq", "p99 × lib/pq"}}
	for _, r := range res.Rows {
		t.add(r.Name, fmtSummary(r.Metrics["p50_us"], fmtUs), fmtSummary(r.Metrics["p99_us"], fmtUs),
			fmtSummary(r.Metrics["max_us"], fmtUs),
			ratioTo(r, pgxCtx, "p50_us"), ratioTo(r, pgxCtx, "p99_us"),
			ratioTo(r, pgxBg, "p50_us"), ratioTo(r, pgxBg, "p99_us"),
			ratioTo(r, pq, "p50_us"), ratioTo(r, pq, "p99_us"))
	}
	res.Markdown = fmt.Sprintf("Latency: NOTIFY→application on a real server, one NOTIFY per transaction at %.0f/s for %v "+
		"(%d per trial, the first %d not counted); median (min–max) over %d repetitions of each trial's percentile. "+
		"Lower is better; a ratio below 1 is faster than the reference.\n\n%s",
		perSec, dur, n, n/warmupFraction, cfg.reps, t.String())
	return nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// latencyTrial runs one implementation: it listens on channel while the
// notifier sends n stamped notifications at perSec.
func latencyTrial(ctx context.Context, connString string, notifier *pgx.Conn, im impl, channel string, n int, perSec float64) (latencyStats, error) {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	sess, err := im.open(octx, connString, channel)
	cancel()
	if err != nil {
		return latencyStats{}, err
	}
	defer sess.close()

	base := time.Now()
	sent := make([]atomic.Int64, n) // ns since base, set before each NOTIFY
	lat := make([]time.Duration, 0, n)
	bad := 0
	f := func(_, payload string) {
		now := time.Since(base)
		seq, err := strconv.Atoi(payload[:10])
		if err != nil || seq < 0 || seq >= n {
			bad++
			return
		}
		if seq >= n/warmupFraction {
			lat = append(lat, now-time.Duration(sent[seq].Load()))
		}
	}
	rctx, rcancel := context.WithTimeout(ctx, time.Duration(float64(n)/perSec*float64(time.Second))+time.Minute)
	defer rcancel()
	done := make(chan error, 1)
	go func() { done <- sess.receive(rctx, n, f) }()

	interval := time.Duration(float64(time.Second) / perSec)
	pad := strings.Repeat("x", payloadLen-11)
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		payload := fmt.Sprintf("%010d %s", i, pad)
		sent[i].Store(int64(time.Since(base)))
		if _, err := notifier.Exec(ctx, "SELECT pg_notify($1, $2)", channel, payload); err != nil {
			rcancel()
			<-done
			return latencyStats{}, err
		}
	}
	if err := <-done; err != nil {
		return latencyStats{}, err
	}
	if bad > 0 || len(lat) == 0 {
		return latencyStats{}, fmt.Errorf("%d malformed payloads, %d samples", bad, len(lat))
	}
	return latencyOf(lat), nil
}
