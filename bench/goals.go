package main

import (
	"fmt"
	"math"
	"strings"
)

// goal is one target of issue 4, checked against saved results.
type goal struct {
	what     string
	target   string
	measured string
	met      string
}

// writeGoals prints the goals of issue 4 (the Manager), issue 8 (the Bus)
// and issue 9 (package durable) against the saved results: each with the ratio measured in one run
// (medians), and whether it is met.
func writeGoals(cfg config) error {
	var gs []goal
	get := func(scenario string) *result {
		r, err := load(cfg, scenario)
		if err != nil {
			return nil
		}
		return r
	}
	med := func(r *result, group, key, metric string) float64 {
		if r == nil {
			return math.NaN()
		}
		row := findRow(r.Rows, group, key)
		if row == nil {
			return math.NaN()
		}
		s, ok := row.Metrics[metric]
		if !ok { // a result saved before the metric existed
			return math.NaN()
		}
		return s.Median
	}
	verdict := func(ok bool, vals ...float64) string {
		for _, v := range vals {
			if math.IsNaN(v) {
				return "not measured"
			}
		}
		if ok {
			return "met"
		}
		return "**not met**"
	}
	ratio := func(v float64) string {
		if math.IsNaN(v) {
			return "—"
		}
		return fmt.Sprintf("%.2f×", v)
	}

	client := get("client")
	r1 := med(client, "", "manager", "rate") / med(client, "", "pq", "rate")
	gs = append(gs, goal{"client receive rate vs lib/pq", "≥ 1.0×", ratio(r1), verdict(r1 >= 1.0, r1)})
	r2 := med(client, "", "manager", "rate") / med(client, "", "pgproto3", "rate")
	gs = append(gs, goal{"client receive rate vs bare pgproto3", "≥ 0.8×", ratio(r2), verdict(r2 >= 0.8, r2)})
	a := med(client, "", "manager", "allocs")
	gs = append(gs, goal{"allocations per notification (client)", "≤ 4", fmt.Sprintf("%.2f (pgx alone: %.2f)", a, med(client, "", "pgxbg", "allocs")), verdict(a <= 4, a)})

	backlog := get("backlog")
	r3 := med(backlog, "", "manager", "rate") / med(backlog, "", "pq", "rate")
	gs = append(gs, goal{"backlog drain rate vs lib/pq", "≥ 1.0×", ratio(r3), verdict(r3 >= 1.0, r3)})

	lat := get("latency")
	for _, p := range []string{"p50", "p99"} {
		m := med(lat, "", "manager", p+"_us")
		vc := m / med(lat, "", "pgx", p+"_us")
		vb := m / med(lat, "", "pgxbg", p+"_us")
		gs = append(gs, goal{"latency " + p + " vs raw pgx (ctx / Background)", "≤ 1.1× (both)",
			ratio(vc) + " / " + ratio(vb), verdict(vc <= 1.1 && vb <= 1.1, vc, vb)})
	}

	fanin := get("fanin")
	r4 := med(fanin, "fake K=1000", "manager", "rate") / med(fanin, "fake K=10", "manager", "rate")
	gs = append(gs, goal{"fan-in rate at K=1000 vs K=10 (fake server)", "≥ 0.8×", ratio(r4), verdict(r4 >= 0.8, r4)})

	idle := get("idle")
	cpu := med(idle, "", "manager", "cpu_pct")
	gs = append(gs, goal{"idle CPU, 1000 connections, default health check", "≤ 1% of one core",
		fmt.Sprintf("%.3f%%", cpu), verdict(cpu <= 1, cpu)})
	heap := med(idle, "", "manager", "heap_kib") - med(idle, "", "pgxonly", "heap_kib")
	rss := med(idle, "", "manager", "rss_kib") - med(idle, "", "pgxonly", "rss_kib")
	gs = append(gs, goal{"idle memory per connection beyond pgx's own", "≤ 16 KiB",
		fmt.Sprintf("%.1f KiB heap+stacks, %.1f KiB RSS", heap, rss), verdict(heap <= 16 && rss <= 16, heap, rss)})

	drain := get("drain")
	r5 := med(drain, "K=1000", "manager", "pass_ms") / med(drain, "K=1000", "errgroup", "pass_ms")
	gs = append(gs, goal{"drain pass over 1000 connections vs errgroup(64) loop", "≤ 1.2×", ratio(r5), verdict(r5 <= 1.2, r5)})

	t := table{head: []string{"goal (pgnotify Manager)", "target", "measured (same-run medians)", "verdict"}}
	for _, g := range gs {
		t.add(g.what, g.target, g.measured, g.met)
	}
	var commits []string
	for _, r := range []*result{client, backlog, lat, fanin, idle, drain} {
		if r != nil && !strings.Contains(strings.Join(commits, " "), r.Machine.Pgnotify) {
			commits = append(commits, r.Machine.Pgnotify)
		}
	}
	fmt.Printf("## goals\n\nFrom the results in %s (pgnotify %s).\n\n%s\n", cfg.out, strings.Join(commits, ", "), t.String())

	bus := get("bus")
	var bs []goal
	cpu10k := med(bus, "fanout", "1x10000", "cpu_ns")
	bs = append(bs, goal{"client CPU per delivery, 10,000 subscriptions on one channel", "≤ 100 ns",
		fmt.Sprintf("%.1f ns (10,000 over 1,000 channels: %.1f ns)", cpu10k, med(bus, "fanout", "1000x10000", "cpu_ns")),
		verdict(cpu10k <= 100, cpu10k)})
	idleB := med(bus, "idle", "shared", "bytes")
	bs = append(bs, goal{"heap per idle subscription", "≤ 2 KiB",
		fmt.Sprintf("%.0f B (each on its own channel: %.0f B)", idleB, med(bus, "idle", "own", "bytes")),
		verdict(idleB <= 2048, idleB)})
	st := med(bus, "stall", "ratio", "ratio")
	bs = append(bs, goal{"others' rate with a stalled DropOldest subscriber / without", "changes < 10 %",
		fmt.Sprintf("%.3f×", st), verdict(math.Abs(st-1) < 0.10, st)})
	r1000 := med(bus, "real K=1000", busKeyBus, "rate") / med(bus, "real K=1000", busKeyConns, "rate")
	bs = append(bs, goal{"deliveries/s at K = 1000, Bus vs 1000 listening pgx connections (real server)", "≥ 20×",
		ratio(r1000), verdict(r1000 >= 20, r1000)})
	t = table{head: []string{"goal (pgnotify Bus)", "target", "measured (same-run medians)", "verdict"}}
	for _, g := range bs {
		t.add(g.what, g.target, g.measured, g.met)
	}
	busCommit := "not run"
	if bus != nil {
		busCommit = bus.Machine.Pgnotify
	}
	fmt.Printf("From %s (pgnotify %s).\n\n%s\n", resultPath(cfg, "bus", bus != nil && bus.Quick), busCommit, t.String())

	dur := get("durable")
	var ds []goal
	atMax := med(dur, "", durKeyDurable, "replay_client_at_server_max_pct")
	share := med(dur, "", durKeyDurable, "replay_client_pct")
	ds = append(ds, goal{"the stream is never the bottleneck: consumer CPU at the walsender's maximum rate (backlog replay)",
		"≤ 30 % of one core",
		fmt.Sprintf("%.0f %% (consumer CPU / walsender CPU; measured share %.0f %% with the walsender at %.0f %%)",
			atMax, share, med(dur, "", durKeyDurable, "replay_server_pct")),
		verdict(atMax <= 30, atMax)})
	lp := med(dur, "", durKeyDurable, "p50_us") / med(dur, "", durKeyNotify, "p50_us")
	ds = append(ds, goal{"latency p50, one in flight, durable vs NOTIFY", "≤ 3×", ratio(lp), verdict(lp <= 3, lp)})
	t = table{head: []string{"goal (package durable)", "target", "measured (same-run medians)", "verdict"}}
	for _, g := range ds {
		t.add(g.what, g.target, g.measured, g.met)
	}
	durCommit := "not run"
	if dur != nil {
		durCommit = dur.Machine.Pgnotify
	}
	fmt.Printf("From %s (pgnotify %s).\n\n%s\n", resultPath(cfg, "durable", dur != nil && dur.Quick), durCommit, t.String())
	return nil
}
