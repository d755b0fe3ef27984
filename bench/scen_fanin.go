package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// faninKs are the connection counts of the fanin scenario.
var faninKs = []int{10, 100, 1000}

// fanSample is one fan-in trial: a rate run, then a latency run on the same
// connections.
type fanSample struct {
	rate sample
	lat  latencyStats
}

// runFanin measures K connections fanning into one consumer, K = 10, 100,
// 1000, against the fake server (the client's own cost: the fake streams
// N/K notifications on every connection at once, then sends stamped ones at
// a fixed aggregate rate, round-robin) and against a real server (where
// every notifying commit wakes every listening backend: a transaction of
// notifications spread over K channels, one per connection, then stamped
// NOTIFYs at a fixed rate, one per transaction).
func runFanin(ctx context.Context, cfg config, res *result) error {
	fakeN, fakeRate, fakeDur := 2_000_000, 2000.0, 3*time.Second
	realN, realBatch, realRate, realDur := 100_000, 10_000, 100.0, 5*time.Second
	if cfg.quick {
		fakeN, fakeDur = 200_000, time.Second
		realN, realBatch, realDur = 20_000, 5_000, 2*time.Second
	}
	res.Params["fake_notifications"] = fakeN
	res.Params["fake_latency_rate_per_sec"] = fakeRate
	res.Params["fake_latency_seconds"] = fakeDur.Seconds()
	res.Params["real_notifications"] = realN
	res.Params["real_batch_per_tx"] = realBatch
	res.Params["real_latency_rate_per_sec"] = realRate
	res.Params["real_latency_seconds"] = realDur.Seconds()
	impls := selectImpls(fanImpls, func(i fanImpl) string { return i.key }, cfg.impls)

	fake, err := startFake()
	if err != nil {
		return err
	}
	defer fake.stop()
	cl, notifier, stop, err := startRealWithNotifier(ctx, res)
	if err != nil {
		return err
	}
	defer stop()

	type key struct {
		server string
		k      int
	}
	all := map[key][][]fanSample{}
	for _, server := range []string{"fake", "real"} {
		for _, k := range faninKs {
			samples := make([][]fanSample, len(impls))
			for rep := range cfg.reps {
				for i, im := range impls {
					prefix := fmt.Sprintf("f%s_%d_%d_%d", server[:1], k, rep, i)
					var s fanSample
					var err error
					if server == "fake" {
						s, err = fanFakeTrial(ctx, fake, im, prefix, k, fakeN, fakeRate, fakeDur)
					} else {
						s, err = fanRealTrial(ctx, cl.ConnString(), notifier, im, prefix, k, realNFor(realN, k), realBatch, realRate, realDur)
					}
					if err != nil {
						return fmt.Errorf("%s server, %d connections, %s: %w", server, k, im.name, err)
					}
					samples[i] = append(samples[i], s)
					if cfg.verbose {
						logf("fanin %s K=%d rep %d %-32s %s  %5.0f ns  %.2f allocs  p50 %v p99 %v", server, k, rep, im.name,
							fmtRate(s.rate.rate()), s.rate.cpuPer(), s.rate.allocsPer(), s.lat.p50, s.lat.p99)
					}
				}
			}
			logf("fanin: %s server, K=%d done", server, k)
			all[key{server, k}] = samples
		}
	}

	for _, server := range []string{"fake", "real"} {
		for _, k := range faninKs {
			group := fmt.Sprintf("%s K=%d", server, k)
			for i, im := range impls {
				r := row{Group: group, Key: im.key, Name: im.name, Metrics: map[string]summary{}}
				var rates []sample
				var p50, p99 []float64
				for _, s := range all[key{server, k}][i] {
					rates = append(rates, s.rate)
					p50 = append(p50, us(s.lat.p50))
					p99 = append(p99, us(s.lat.p99))
				}
				addRateMetrics(r.Metrics, rates)
				r.Metrics["p50_us"] = summarize(p50)
				r.Metrics["p99_us"] = summarize(p99)
				res.Rows = append(res.Rows, r)
			}
		}
	}

	var md strings.Builder
	for _, server := range []string{"fake", "real"} {
		t := table{head: []string{"K", "implementation", "aggregate rate", "× lib/pq", "× own K=10",
			"CPU ns/notif", "allocs/notif", "p50", "p99", "p50 × lib/pq", "p99 × lib/pq"}}
		for _, k := range faninKs {
			group := fmt.Sprintf("%s K=%d", server, k)
			pq := findRow(res.Rows, group, "pq")
			for _, r := range res.Rows {
				if r.Group != group {
					continue
				}
				k10 := findRow(res.Rows, fmt.Sprintf("%s K=10", server), r.Key)
				t.add(strconv.Itoa(k), r.Name, fmtSummary(r.Metrics["rate"], fmtRate), ratioTo(r, pq, "rate"),
					ratioTo(r, k10, "rate"), fmtSummary(r.Metrics["cpu_ns"], fmtNs), fmtSummary(r.Metrics["allocs"], fmtAllocs),
					fmtSummary(r.Metrics["p50_us"], fmtUs), fmtSummary(r.Metrics["p99_us"], fmtUs),
					ratioTo(r, pq, "p50_us"), ratioTo(r, pq, "p99_us"))
			}
		}
		if server == "fake" {
			fmt.Fprintf(&md, "Fan-in, fake server: %d notifications in total per trial (N/K per connection, streamed on all at once); "+
				"latency at %.0f/s aggregate for %v, round-robin over the connections, stamped by the fake server (wall clock, same machine). "+
				"Median (min–max) of %d repetitions; CPU and allocations are the client's, over the rate run.\n\n%s\n",
				fakeN, fakeRate, fakeDur, cfg.reps, t.String())
		} else {
			fmt.Fprintf(&md, "Fan-in, real server: %d notifications per trial (%d at K=1000), %d per transaction, spread over K channels "+
				"(one per connection); the rate includes the server queueing them. Latency: one NOTIFY per transaction at %.0f/s for %v, "+
				"round-robin over the channels. Median (min–max) of %d repetitions.\n\n%s",
				realN, realNFor(realN, 1000), realBatch, realRate, realDur, cfg.reps, t.String())
		}
	}
	res.Markdown = md.String()
	return nil
}

// realNFor scales the real server's notification count down at K=1000,
// where every backend scans every queued notification and the server, not
// the client, sets the pace (a few thousand per second).
func realNFor(n, k int) int {
	if k >= 1000 {
		return n / 5
	}
	return n
}

// fanFakeTrial opens K connections on the fake server, all listening on
// channel, and measures first the rate (the fake streams n/k on each), then
// the latency at perSec aggregate.
func fanFakeTrial(ctx context.Context, fake *fakeProc, im fanImpl, channel string, k, n int, perSec float64, dur time.Duration) (fanSample, error) {
	octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	sess, err := im.open(octx, fake.connString(), slices.Repeat([]string{channel}, k))
	cancel()
	if err != nil {
		return fanSample{}, err
	}
	defer sess.close()
	per := n / k
	n = per * k
	var out fanSample

	var bytes int
	runtime.GC()
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer rcancel()
	m := startMeter()
	got, err := fake.command("stream %s %d", channel, per)
	if err == nil && got != k {
		err = fmt.Errorf("fake server: %d connections listen on %s, want %d", got, channel, k)
	}
	if err != nil {
		return fanSample{}, err
	}
	if err := sess.receive(rctx, n, func(_, p string) { bytes += len(p) }); err != nil {
		return fanSample{}, err
	}
	out.rate = m.stop(n)
	if bytes != n*payloadLen {
		return fanSample{}, fmt.Errorf("received %d payload bytes, want %d", bytes, n*payloadLen)
	}

	ln := int(perSec * dur.Seconds())
	lat := make([]time.Duration, 0, ln)
	bad := 0
	if _, err := fake.command("rate %s %d %g", channel, ln, perSec); err != nil {
		return fanSample{}, err
	}
	err = sess.receive(rctx, ln, func(_, p string) {
		now := time.Now().UnixNano()
		t := stampNanos(p)
		if t == 0 {
			bad++
			return
		}
		lat = append(lat, time.Duration(now-t))
	})
	if err != nil {
		return fanSample{}, err
	}
	if bad > 0 {
		return fanSample{}, fmt.Errorf("%d malformed stamped payloads", bad)
	}
	lat = lat[len(lat)/warmupFraction:]
	out.lat = latencyOf(lat)
	return out, nil
}

// fanSQL queues notifications lo..hi spread over channels PREFIX_0 ..
// PREFIX_{k-1} in one transaction.
const fanSQL = `SELECT count(pg_notify($1 || (g % $2), lpad(g::text, 64, 'x'))) FROM generate_series($3::int, $4::int) AS g`

// fanRealTrial opens K connections on the real server, connection i
// listening on PREFIX_i, and measures the aggregate rate of n notifications
// queued in transactions of batch, then the latency of stamped NOTIFYs at
// perSec, round-robin over the channels.
func fanRealTrial(ctx context.Context, connString string, notifier *pgx.Conn, im fanImpl, prefix string, k, n, batch int, perSec float64, dur time.Duration) (fanSample, error) {
	channels := make([]string, k)
	for i := range channels {
		channels[i] = prefix + "_" + strconv.Itoa(i)
	}
	octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	sess, err := im.open(octx, connString, channels)
	cancel()
	if err != nil {
		return fanSample{}, err
	}
	defer sess.close()
	var out fanSample

	rctx, rcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer rcancel()
	var bytes int
	runtime.GC()
	m := startMeter()
	done := make(chan error, 1)
	go func() { done <- sess.receive(rctx, n, func(_, p string) { bytes += len(p) }) }()
	for lo := 1; lo <= n; lo += batch {
		if _, err := notifier.Exec(ctx, fanSQL, prefix+"_", k, lo, min(lo+batch-1, n)); err != nil {
			rcancel()
			<-done
			return fanSample{}, err
		}
	}
	if err := <-done; err != nil {
		return fanSample{}, err
	}
	out.rate = m.stop(n)
	if bytes != n*payloadLen {
		return fanSample{}, fmt.Errorf("received %d payload bytes, want %d", bytes, n*payloadLen)
	}

	ln := int(perSec * dur.Seconds())
	base := time.Now()
	sent := make([]atomic.Int64, ln)
	lat := make([]time.Duration, 0, ln)
	bad := 0
	go func() {
		done <- sess.receive(rctx, ln, func(_, p string) {
			now := time.Since(base)
			seq, err := strconv.Atoi(p[:10])
			if err != nil || seq < 0 || seq >= ln {
				bad++
				return
			}
			lat = append(lat, now-time.Duration(sent[seq].Load()))
		})
	}()
	interval := time.Duration(float64(time.Second) / perSec)
	pad := strings.Repeat("x", payloadLen-11)
	start := time.Now()
	for i := range ln {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		sent[i].Store(int64(time.Since(base)))
		if _, err := notifier.Exec(ctx, "SELECT pg_notify($1, $2)", channels[i%k], fmt.Sprintf("%010d %s", i, pad)); err != nil {
			rcancel()
			<-done
			return fanSample{}, err
		}
	}
	if err := <-done; err != nil {
		return fanSample{}, err
	}
	if bad > 0 || len(lat) == 0 {
		return fanSample{}, fmt.Errorf("%d malformed payloads, %d samples", bad, len(lat))
	}
	lat = lat[len(lat)/warmupFraction:]
	out.lat = latencyOf(lat)
	return out, nil
}
