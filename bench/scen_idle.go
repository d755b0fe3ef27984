package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/seed-c59d106d/pgnotify"
)

// memSnap is the process's memory and goroutines at one instant, after a
// full collection.
type memSnap struct {
	heapStack  float64 // HeapInuse + StackInuse
	rss        float64
	goroutines int
}

func takeMem() memSnap {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSnap{heapStack: float64(ms.HeapInuse + ms.StackInuse), rss: rssBytes(), goroutines: runtime.NumGoroutine()}
}

// idleImpls are the fan-in implementations plus the idle scenario's own: the
// pgx baseline (connections nobody reads) and the Manager with a 1s health
// check, whose pings show what the default (every 30s) costs over time.
func idleImpls(filter string) []fanImpl {
	all := []fanImpl{{key: "pgxonly", name: "pgx connections alone (baseline)", open: openPgxOnly}}
	all = append(all, fanImpls...)
	all = append(all, fanImpl{key: "managerhc", name: "pgnotify Manager, health check every 1s",
		open: func(ctx context.Context, cs string, chs []string) (session, error) {
			return openManagerK(ctx, cs, chs, pgnotify.WithHealthCheck(time.Second, 0))
		}})
	return selectImpls(all, func(i fanImpl) string { return i.key }, filter)
}

// idleSample is one idle trial.
type idleSample struct {
	cpuPct     float64 // % of one core over the idle window
	heapPer    float64 // bytes of heap + stacks per connection, over the process before
	rssPer     float64 // bytes of RSS per connection, over the process before
	goroutines float64 // goroutines per connection
}

// runIdle holds K = 1000 listening connections to a real server with no
// traffic for a while and measures the process's CPU time, memory and
// goroutines per connection, for each implementation and for pgx's
// connections alone.
func runIdle(ctx context.Context, cfg config, res *result) error {
	const k = 1000
	window := 10 * time.Second
	if cfg.quick {
		window = 3 * time.Second
	}
	settle := time.Second
	res.Params["connections"] = k
	res.Params["idle_seconds"] = window.Seconds()
	impls := idleImpls(cfg.impls)

	cl, err := startReal(ctx, res)
	if err != nil {
		return err
	}
	defer stopReal(cl)

	samples := make([][]idleSample, len(impls))
	for rep := range cfg.reps {
		for i, im := range impls {
			channels := make([]string, k)
			for j := range channels {
				channels[j] = fmt.Sprintf("idle_%d_%d_%d", rep, i, j)
			}
			before := takeMem()
			octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			sess, err := im.open(octx, cl.ConnString(), channels)
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", im.name, err)
			}
			time.Sleep(settle)
			runtime.GC()
			cpu0 := cpuTime()
			time.Sleep(window)
			cpu := cpuTime() - cpu0
			after := takeMem()
			sess.close()
			s := idleSample{
				cpuPct:     100 * cpu.Seconds() / window.Seconds(),
				heapPer:    (after.heapStack - before.heapStack) / k,
				rssPer:     (after.rss - before.rss) / k,
				goroutines: float64(after.goroutines-before.goroutines) / k,
			}
			samples[i] = append(samples[i], s)
			if cfg.verbose {
				logf("idle rep %d %-40s cpu %.3f%%  heap %.1f KiB/conn  rss %.1f KiB/conn  %.2f goroutines/conn",
					rep, im.name, s.cpuPct, s.heapPer/1024, s.rssPer/1024, s.goroutines)
			}
		}
		logf("idle: repetition %d of %d done", rep+1, cfg.reps)
	}

	for i, im := range impls {
		r := row{Key: im.key, Name: im.name, Metrics: map[string]summary{}}
		var cpu, heap, rss, gs []float64
		for _, s := range samples[i] {
			cpu = append(cpu, s.cpuPct)
			heap = append(heap, s.heapPer/1024)
			rss = append(rss, s.rssPer/1024)
			gs = append(gs, s.goroutines)
		}
		r.Metrics["cpu_pct"] = summarize(cpu)
		r.Metrics["heap_kib"] = summarize(heap)
		r.Metrics["rss_kib"] = summarize(rss)
		r.Metrics["goroutines"] = summarize(gs)
		res.Rows = append(res.Rows, r)
	}
	base := findRow(res.Rows, "", "pgxonly")
	pq := findRow(res.Rows, "", "pq")
	t := table{head: []string{"implementation", "CPU, % of one core", "heap+stacks per conn", "beyond pgx's own",
		"RSS per conn", "beyond pgx's own", "goroutines per conn", "heap × lib/pq"}}
	for _, r := range res.Rows {
		beyondHeap, beyondRSS := "—", "—"
		if base != nil && r.Key != "pq" && r.Key != "pgxonly" {
			beyondHeap = fmtKiB(r.Metrics["heap_kib"].Median - base.Metrics["heap_kib"].Median)
			beyondRSS = fmtKiB(r.Metrics["rss_kib"].Median - base.Metrics["rss_kib"].Median)
		}
		t.add(r.Name, fmtSummary(r.Metrics["cpu_pct"], fmtPct), fmtSummary(r.Metrics["heap_kib"], fmtKiB), beyondHeap,
			fmtSummary(r.Metrics["rss_kib"], fmtKiB), beyondRSS, fmtSummary(r.Metrics["goroutines"], fmtF2),
			ratioTo(r, pq, "heap_kib"))
	}
	res.Markdown = fmt.Sprintf("Idle: %s listening connections to a real server, no traffic for %v (after %v to settle); "+
		"the process's CPU time over the window, and its heap+stacks, RSS and goroutines after it, "+
		"less what the process held before the connections were opened, per connection. "+
		"\"Beyond pgx's own\" subtracts the baseline row (the same connections, opened by pgx and never read). "+
		"Median (min–max) of %d repetitions.\n\n%s",
		strconv.Itoa(k), window, settle, cfg.reps, t.String())
	return nil
}
