package main

// The bus scenario: pgnotify's Bus (one connection, per-channel fan-out to
// many subscriptions) measured on its own against the fake server (fan-out
// cost, idle memory, a stalled subscriber's effect), its subscribe + close
// churn on a real server, and, on a real server, against what it replaces:
// one listening pgx connection per subscriber.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/bus"
)

// busFanCase is one fan-out setting: subs subscriptions spread round-robin
// over chans channels, n notifications streamed (round-robin over the
// channels), so each subscription gets n/chans of them.
type busFanCase struct {
	key         string
	subs, chans int
	n           int
}

// busRealKs are the subscriber counts of the real-server comparison.
var busRealKs = []int{10, 100, 1000}

// Keys of the bus scenario's rows.
const (
	busKeyBus   = "bus"
	busKeyConns = "conns"
)

// runBus measures the Bus: fan-out on the fake server, idle memory per
// subscription, a stalled OverflowDropOldest subscriber's effect on the
// others, subscribe + close churn on a real server, and the Bus against one
// pgx connection per subscriber on a real server, and the Bus beside
// pgxlisten (scen_buspeer.go).
func runBus(ctx context.Context, cfg config, res *result) error {
	div := 1
	if cfg.quick {
		div = 10
	}
	fanCases := []busFanCase{
		{key: "1x1", subs: 1, chans: 1, n: 1_000_000 / div},
		{key: "1x100", subs: 100, chans: 1, n: 50_000 / div},
		{key: "1x10000", subs: 10_000, chans: 1, n: 1_000 / div},
		{key: "1000x10000", subs: 10_000, chans: 1000, n: 500_000 / div},
	}
	idleN := 10_000
	stallSubs, stallN := 100, 200_000/div
	churnListened, churnNew := 20_000/div, 1_000/div
	// NOTIFYs per trial in the real comparison: fewer at K=1000, where the
	// listening connections are slow, to keep the run bounded.
	realM := map[int]int{10: 20_000 / div, 100: 5_000 / div, 1000: 1_000 / div}
	fanN := map[string]int{}
	for _, c := range fanCases {
		fanN[c.key] = c.n
	}
	res.Params["fanout_notifications"] = fanN
	res.Params["idle_subscriptions"] = idleN
	res.Params["stall_fast_subscriptions"] = stallSubs
	res.Params["stall_notifications"] = stallN
	res.Params["churn_listened_ops"] = churnListened
	res.Params["churn_new_ops"] = churnNew
	res.Params["real_notifies"] = realM

	fake, err := startFake()
	if err != nil {
		return err
	}
	defer fake.stop()
	fakeConnect := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, fake.connString()) }

	// Fan-out, interleaved: every case once per repetition.
	fan := make([][]sample, len(fanCases))
	for rep := range cfg.reps {
		for i, c := range fanCases {
			s, err := busFanTrial(ctx, fake, fakeConnect, fmt.Sprintf("bf%d_%d", rep, i), c)
			if err != nil {
				return fmt.Errorf("fan-out %s: %w", c.key, err)
			}
			fan[i] = append(fan[i], s)
			if cfg.verbose {
				logf("bus fan-out %-10s rep %d %s deliveries/s  %5.0f ns/delivery", c.key, rep, fmtRate(s.rate()), s.cpuPer())
			}
		}
	}
	logf("bus: fan-out done")
	for i, c := range fanCases {
		r := row{Group: "fanout", Key: c.key, Name: fmt.Sprintf("%d subscriptions on %d channel(s)", c.subs, c.chans), Metrics: map[string]summary{}}
		addRateMetrics(r.Metrics, fan[i])
		res.Rows = append(res.Rows, r)
	}

	// A stalled subscriber, interleaved with and without it.
	stall := map[bool][]sample{}
	for rep := range cfg.reps {
		for _, stalled := range []bool{false, true} {
			s, err := busStallTrial(ctx, fake, fakeConnect, fmt.Sprintf("bs%d_%v", rep, stalled), stallSubs, stallN, stalled)
			if err != nil {
				return fmt.Errorf("stalled subscriber (%v): %w", stalled, err)
			}
			stall[stalled] = append(stall[stalled], s)
			if cfg.verbose {
				logf("bus stall=%v rep %d %s deliveries/s  %5.0f ns/delivery", stalled, rep, fmtRate(s.rate()), s.cpuPer())
			}
		}
	}
	logf("bus: stalled subscriber done")
	for _, stalled := range []bool{false, true} {
		key, name := "without", fmt.Sprintf("%d readers", stallSubs)
		if stalled {
			key, name = "with", fmt.Sprintf("%d readers + 1 stalled (DropOldest, never reads)", stallSubs)
		}
		r := row{Group: "stall", Key: key, Name: name, Metrics: map[string]summary{}}
		addRateMetrics(r.Metrics, stall[stalled])
		res.Rows = append(res.Rows, r)
	}
	// The ratio per repetition (with / without), then its median.
	var stallRatio []float64
	for i := range stall[true] {
		stallRatio = append(stallRatio, stall[true][i].rate()/stall[false][i].rate())
	}
	res.Rows = append(res.Rows, row{Group: "stall", Key: "ratio", Name: "rate with / without, per repetition",
		Metrics: map[string]summary{"ratio": summarize(stallRatio)}})

	// Idle memory per subscription.
	idle := map[bool][]float64{}
	for rep := range cfg.reps {
		for _, own := range []bool{false, true} {
			b, err := busIdleTrial(ctx, fakeConnect, fmt.Sprintf("bi%d_%v", rep, own), idleN, own)
			if err != nil {
				return fmt.Errorf("idle subscriptions: %w", err)
			}
			idle[own] = append(idle[own], b)
			if cfg.verbose {
				logf("bus idle own=%v rep %d %.0f B/subscription", own, rep, b)
			}
		}
	}
	logf("bus: idle memory done")
	for _, own := range []bool{false, true} {
		key, name := "shared", fmt.Sprintf("%d subscriptions on one channel", idleN)
		if own {
			key, name = "own", fmt.Sprintf("%d subscriptions, each on its own channel", idleN)
		}
		res.Rows = append(res.Rows, row{Group: "idle", Key: key, Name: name, Metrics: map[string]summary{"bytes": summarize(idle[own])}})
	}

	// The real server: churn, then the Bus against a connection per subscriber.
	cl, notifier, stop, err := startRealWithNotifier(ctx, res)
	if err != nil {
		return err
	}
	defer stop()
	realConnect := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, cl.ConnString()) }

	churn := map[bool][]float64{}
	for rep := range cfg.reps {
		for _, fresh := range []bool{false, true} {
			n := churnListened
			if fresh {
				n = churnNew
			}
			ops, err := busChurnTrial(ctx, realConnect, fmt.Sprintf("bc%d", rep), n, fresh)
			if err != nil {
				return fmt.Errorf("churn (new channels %v): %w", fresh, err)
			}
			churn[fresh] = append(churn[fresh], ops)
			if cfg.verbose {
				logf("bus churn new=%v rep %d %.0f ops/s", fresh, rep, ops)
			}
		}
	}
	logf("bus: churn done")
	for _, fresh := range []bool{false, true} {
		key, name := "listened", "on a channel another subscription keeps listened"
		if fresh {
			key, name = "new", "on a new channel each time (LISTEN + UNLISTEN)"
		}
		res.Rows = append(res.Rows, row{Group: "churn", Key: key, Name: name, Metrics: map[string]summary{"ops": summarize(churn[fresh])}})
	}

	for _, k := range busRealKs {
		samples := map[string][]sample{}
		for rep := range cfg.reps {
			for _, key := range []string{busKeyBus, busKeyConns} {
				channel := fmt.Sprintf("br%d_%d_%s", k, rep, key)
				var s sample
				var err error
				if key == busKeyBus {
					s, err = busRealTrial(ctx, realConnect, notifier, channel, k, realM[k])
				} else {
					s, err = connsRealTrial(ctx, cl.ConnString(), notifier, channel, k, realM[k])
				}
				if err != nil {
					return fmt.Errorf("real server K=%d %s: %w", k, key, err)
				}
				samples[key] = append(samples[key], s)
				if cfg.verbose {
					logf("bus real K=%d %-5s rep %d %s deliveries/s  %5.0f ns/delivery", k, key, rep, fmtRate(s.rate()), s.cpuPer())
				}
			}
		}
		logf("bus: real server K=%d done", k)
		for _, key := range []string{busKeyBus, busKeyConns} {
			name := "pgnotify Bus (1 connection)"
			if key == busKeyConns {
				name = "pgx connection per subscriber"
			}
			r := row{Group: fmt.Sprintf("real K=%d", k), Key: key, Name: name, Metrics: map[string]summary{}}
			addRateMetrics(r.Metrics, samples[key])
			res.Rows = append(res.Rows, r)
		}
	}

	if err := busPeerTrials(ctx, cfg, res, cl.ConnString(), notifier); err != nil {
		return err
	}
	res.Markdown = busMarkdown(cfg, res, fanCases, idleN, stallSubs, stallN, churnListened, churnNew, realM) +
		"\n" + busPeerMarkdown(cfg, res)
	return nil
}

// busMarkdown writes the scenario's tables.
func busMarkdown(cfg config, res *result, fanCases []busFanCase, idleN, stallSubs, stallN, churnListened, churnNew int, realM map[int]int) string {
	var md strings.Builder
	t := table{head: []string{"subscriptions", "channels", "notifications", "deliveries/s", "client CPU ns/delivery", "allocs/delivery"}}
	for _, c := range fanCases {
		r := findRow(res.Rows, "fanout", c.key)
		t.add(strconv.Itoa(c.subs), strconv.Itoa(c.chans), strconv.Itoa(c.n), fmtSummary(r.Metrics["rate"], fmtRate),
			fmtSummary(r.Metrics["cpu_ns"], fmtF1), fmtSummary(r.Metrics["allocs"], fmtAllocs3))
	}
	fmt.Fprintf(&md, "Bus fan-out, fake server (child process) streaming 64-byte notifications to the Bus's one connection as fast as "+
		"the socket takes them, round-robin over the channels; subscription i listens on channel i mod channels and is read by its own "+
		"goroutine; OverflowBlock (lossless: every delivery is read). A delivery is one notification handed to one subscription and "+
		"read by its reader. Median (min–max) of %d repetitions; CPU and allocations are the client process's only, divided by the deliveries.\n\n%s\n",
		cfg.reps, t.String())

	t = table{head: []string{"setting", "deliveries/s", "client CPU ns/delivery"}}
	for _, key := range []string{"without", "with"} {
		r := findRow(res.Rows, "stall", key)
		t.add(r.Name, fmtSummary(r.Metrics["rate"], fmtRate), fmtSummary(r.Metrics["cpu_ns"], fmtF1))
	}
	ratio := findRow(res.Rows, "stall", "ratio").Metrics["ratio"]
	t.add("**rate with / without** (per repetition)", fmtSummary(ratio, fmtRatioV), "")
	fmt.Fprintf(&md, "A stalled subscriber: %d notifications streamed on one channel to %d reading subscriptions "+
		"(OverflowDropOldest, buffer %d: they never overflow), with and without one more subscription that never reads "+
		"(OverflowDropOldest, default buffer 1024: it overflows and drops all but the newest 1024). Deliveries counted are the readers' only. "+
		"Interleaved, median (min–max) of %d repetitions.\n\n%s\n", stallN, stallSubs, stallN, cfg.reps, t.String())

	t = table{head: []string{"setting", "heap per idle subscription"}}
	for _, key := range []string{"shared", "own"} {
		r := findRow(res.Rows, "idle", key)
		t.add(r.Name, fmtSummary(r.Metrics["bytes"], fmtBytes))
	}
	fmt.Fprintf(&md, "Memory per idle subscription: live heap (HeapAlloc after runtime.GC) after %d more Subscribes minus before, "+
		"divided by %d; the subscriptions are never read; one channel already listened by an earlier subscription, or a new "+
		"channel each (its index entry included). Fake server. Median (min–max) of %d repetitions.\n\n%s\n", idleN, idleN, cfg.reps, t.String())

	t = table{head: []string{"subscribe + close", "ops/s"}}
	for _, key := range []string{"listened", "new"} {
		r := findRow(res.Rows, "churn", key)
		t.add(r.Name, fmtSummary(r.Metrics["ops"], fmtOps))
	}
	fmt.Fprintf(&md, "Subscribe + Close churn on a real server, one goroutine, sequential: %d ops on a channel a kept subscription "+
		"listens on (no round trip), %d ops each on a new channel (Subscribe waits for its LISTEN, Close for its UNLISTEN). "+
		"Median (min–max) of %d repetitions.\n\n%s\n", churnListened, churnNew, cfg.reps, t.String())

	t = table{head: []string{"K", "implementation", "NOTIFYs", "deliveries/s", "Bus ×", "× own K=10", "NOTIFYs/s (deliveries/s ÷ K)", "client CPU ns/delivery", "allocs/delivery"}}
	for _, k := range busRealKs {
		group := fmt.Sprintf("real K=%d", k)
		busRow := findRow(res.Rows, group, busKeyBus)
		for _, key := range []string{busKeyBus, busKeyConns} {
			r := findRow(res.Rows, group, key)
			k10 := findRow(res.Rows, "real K=10", key)
			times := ""
			if key == busKeyConns {
				times = fmtRatio(busRow.Metrics["rate"].Median, r.Metrics["rate"].Median)
			}
			t.add(strconv.Itoa(k), r.Name, strconv.Itoa(realM[k]), fmtSummary(r.Metrics["rate"], fmtRate), times,
				ratioTo(*r, k10, "rate"), fmtPerSec(r.Metrics["rate"].Median/float64(k)),
				fmtSummary(r.Metrics["cpu_ns"], fmtF1), fmtSummary(r.Metrics["allocs"], fmtAllocs3))
		}
	}
	fmt.Fprintf(&md, "The Bus against one pgx connection per subscriber, real server: K subscribers on one channel; a producer "+
		"sends a fixed number of NOTIFYs, one per committed transaction (50 transactions per simple-query message), 64-byte payloads; "+
		"deliveries/s = NOTIFYs × K / the time from the first send to the last delivery. Bus: K subscriptions (OverflowBlock, lossless) "+
		"each read by its own goroutine; pgx: K connections, each read by its own goroutine with WaitForNotification(ctx). "+
		"\"Bus ×\" is the Bus's rate over the connections' (same K, same run). Median (min–max) of %d repetitions, fewer NOTIFYs at "+
		"larger K to keep the run bounded; client CPU is this process's (the server's backends are not counted).\n\n%s", cfg.reps, t.String())
	return md.String()
}

func fmtF1(v float64) string      { return fmt.Sprintf("%.1f", v) }
func fmtAllocs3(v float64) string { return fmt.Sprintf("%.3f", v) }
func fmtRatioV(v float64) string  { return fmt.Sprintf("%.3f×", v) }
func fmtOps(v float64) string     { return fmt.Sprintf("%.0f", v) }
func fmtBytes(v float64) string   { return fmt.Sprintf("%.0f B", v) }

// fmtPerSec prints a rate that may be below a thousand per second.
func fmtPerSec(v float64) string {
	if v < 1e3 {
		return fmt.Sprintf("%.0f /s", v)
	}
	return fmtRate(v)
}

// closeBus closes a Bus with a deadline, reporting a failure on stderr.
func closeBus(b *bus.Bus) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		logf("closing a Bus: %v", err)
	}
}

// subscribeMany subscribes n subscriptions, subscription i on channel(i),
// a few at a time (so that new channels' LISTENs overlap).
func subscribeMany(ctx context.Context, b *bus.Bus, n int, channel func(int) string, opts ...bus.SubscribeOption) ([]*bus.Subscription, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ss := make([]*bus.Subscription, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(connectConcurrency)
	for i := range n {
		g.Go(func() error {
			s, err := b.Subscribe(gctx, []string{channel(i)}, opts...)
			ss[i] = s
			return err
		})
	}
	err := g.Wait()
	if err != nil {
		for _, s := range ss {
			if s != nil {
				s.Close()
			}
		}
		return nil, err
	}
	return ss, nil
}

// readers reads subscriptions concurrently, one goroutine each.
type readers struct {
	want          int // notifications read in all, when every reader is done
	cancel        context.CancelFunc
	wg            sync.WaitGroup
	mu            sync.Mutex
	read, dropped int
	err           error
}

// startReaders starts one goroutine per subscription, each reading until
// it has seen n notifications (read, or reported dropped by Lagged).
func startReaders(ctx context.Context, ss []*bus.Subscription, n int) *readers {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	r := &readers{want: n * len(ss), cancel: cancel}
	for _, s := range ss {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			read, dropped, err := readSub(rctx, s, n)
			r.mu.Lock()
			r.read += read
			r.dropped += dropped
			if err != nil && r.err == nil {
				r.err = err
			}
			r.mu.Unlock()
		}()
	}
	return r
}

// wait waits for every reader; it fails when one failed or anything was
// dropped.
func (r *readers) wait() error {
	r.wg.Wait()
	r.cancel()
	if r.err != nil {
		return r.err
	}
	if r.read != r.want || r.dropped != 0 {
		return fmt.Errorf("read %d notifications and %d dropped, want %d read", r.read, r.dropped, r.want)
	}
	return nil
}

// stop ends the readers early (after a failure elsewhere).
func (r *readers) stop() {
	r.cancel()
	r.wg.Wait()
}

// readSub reads s until it has seen n notifications.
func readSub(ctx context.Context, s *bus.Subscription, n int) (read, dropped int, err error) {
	for read+dropped < n {
		ev, err := s.Next(ctx)
		if err != nil {
			return read, dropped, err
		}
		switch ev.Kind {
		case pgnotify.Batch:
			read += len(ev.Notifications)
		case pgnotify.Lagged:
			dropped += ev.Dropped
		case pgnotify.Dead:
			return read, dropped, fmt.Errorf("the Bus's connection died: %w", ev.Err)
		}
	}
	return read, dropped, nil
}

// busFanTrial measures one fan-out setting on a new Bus dialled to the fake
// server.
func busFanTrial(ctx context.Context, fake *fakeProc, connect pgnotify.ConnectFunc, prefix string, c busFanCase) (sample, error) {
	bs := bus.New(connect)
	defer closeBus(bs)
	channel := func(i int) string { return prefix + "_" + strconv.Itoa(i%c.chans) }
	ss, err := subscribeMany(ctx, bs, c.subs, channel, bus.WithOverflow(bus.OverflowBlock))
	if err != nil {
		return sample{}, err
	}
	per := c.n / c.chans
	rd := startReaders(ctx, ss, per)
	runtime.GC()
	m := startMeter()
	var got int
	if c.chans == 1 {
		got, err = fake.command("stream %s %d", channel(0), c.n)
	} else {
		got, err = fake.command("streamrr %s %d %d", prefix, c.chans, per*c.chans)
	}
	if err == nil && got != 1 {
		err = fmt.Errorf("fake server: %d connections listen, want the Bus's 1", got)
	}
	if err != nil {
		rd.stop()
		return sample{}, err
	}
	if err := rd.wait(); err != nil {
		return sample{}, err
	}
	return m.stop(per * c.subs), nil
}

// busStallTrial streams n notifications on one channel to subs reading
// subscriptions that never overflow, and, if stalled, one more that never
// reads; the sample counts the readers' deliveries only.
func busStallTrial(ctx context.Context, fake *fakeProc, connect pgnotify.ConnectFunc, channel string, subs, n int, stalled bool) (sample, error) {
	bs := bus.New(connect)
	defer closeBus(bs)
	ss, err := subscribeMany(ctx, bs, subs, func(int) string { return channel }, bus.WithBuffer(n))
	if err != nil {
		return sample{}, err
	}
	if stalled {
		if _, err := bs.Subscribe(ctx, []string{channel}); err != nil {
			return sample{}, err
		}
	}
	rd := startReaders(ctx, ss, n)
	runtime.GC()
	m := startMeter()
	got, err := fake.command("stream %s %d", channel, n)
	if err == nil && got != 1 {
		err = fmt.Errorf("fake server: %d connections listen, want the Bus's 1", got)
	}
	if err != nil {
		rd.stop()
		return sample{}, err
	}
	if err := rd.wait(); err != nil {
		return sample{}, err
	}
	s := m.stop(n * subs)
	if stalled {
		// The stalled subscription keeps its newest 1024 and drops the
		// rest; the dispatcher counts the last batch's drops just after
		// the readers may have finished.
		want := uint64(n - 1024)
		deadline := time.Now().Add(10 * time.Second)
		for bs.Stats().Dropped != want {
			if time.Now().After(deadline) {
				return sample{}, fmt.Errorf("the stalled subscription dropped %d, want %d", bs.Stats().Dropped, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	return s, nil
}

// busIdleTrial returns the live heap per subscription added by n more
// Subscribes on a Bus (dialled to the fake server), all on one channel an
// earlier subscription listens on, or each on a new channel.
func busIdleTrial(ctx context.Context, connect pgnotify.ConnectFunc, prefix string, n int, own bool) (float64, error) {
	bs := bus.New(connect)
	defer closeBus(bs)
	first, err := bs.Subscribe(ctx, []string{prefix})
	if err != nil {
		return 0, err
	}
	defer first.Close()
	ss := make([]*bus.Subscription, 0, n)
	defer func() {
		for _, s := range ss {
			s.Close()
		}
	}()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		ch := prefix
		if own {
			ch = prefix + "_" + strconv.Itoa(i)
		}
		s, err := bs.Subscribe(ctx, []string{ch})
		if err != nil {
			return 0, err
		}
		ss = append(ss, s)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(ss)
	return (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(n), nil
}

// busChurnTrial returns Subscribe + Close operations per second, n of them
// in sequence, on a channel a kept subscription listens on, or each on a
// new channel.
func busChurnTrial(ctx context.Context, connect pgnotify.ConnectFunc, prefix string, n int, fresh bool) (float64, error) {
	bs := bus.New(connect)
	defer closeBus(bs)
	kept := prefix + "_kept"
	keep, err := bs.Subscribe(ctx, []string{kept})
	if err != nil {
		return 0, err
	}
	defer keep.Close()
	start := time.Now()
	for i := range n {
		ch := kept
		if fresh {
			ch = prefix + "_new_" + strconv.Itoa(i)
		}
		s, err := bs.Subscribe(ctx, []string{ch})
		if err != nil {
			return 0, err
		}
		if err := s.Close(); err != nil {
			return 0, err
		}
	}
	ops := float64(n) / time.Since(start).Seconds()
	if st := bs.Stats(); st.Channels != 1 {
		return 0, fmt.Errorf("after the churn the Bus listens on %d channels, want 1", st.Channels)
	}
	return ops, nil
}

// produceSQL returns a simple-protocol query of one transaction per NOTIFY,
// payloads numbered from..to-1 and padded to 64 bytes.
func produceSQL(channel string, from, to int) string {
	var b strings.Builder
	ch := pgx.Identifier{channel}.Sanitize()
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "BEGIN; NOTIFY %s, '%0*d'; COMMIT;", ch, payloadLen, i)
	}
	return b.String()
}

// produceChunk is how many transactions one producer message carries.
const produceChunk = 50

// produce sends m NOTIFYs on channel, one per transaction.
func produce(ctx context.Context, notifier *pgx.Conn, channel string, m int) error {
	for lo := 0; lo < m; lo += produceChunk {
		if _, err := notifier.PgConn().Exec(ctx, produceSQL(channel, lo, min(lo+produceChunk, m))).ReadAll(); err != nil {
			return err
		}
	}
	return nil
}

// busRealTrial measures K subscriptions of a new Bus on the real server,
// all on channel, receiving m NOTIFYs.
func busRealTrial(ctx context.Context, connect pgnotify.ConnectFunc, notifier *pgx.Conn, channel string, k, m int) (sample, error) {
	bs := bus.New(connect)
	defer closeBus(bs)
	ss, err := subscribeMany(ctx, bs, k, func(int) string { return channel }, bus.WithOverflow(bus.OverflowBlock))
	if err != nil {
		return sample{}, err
	}
	rd := startReaders(ctx, ss, m)
	runtime.GC()
	meter := startMeter()
	if err := produce(ctx, notifier, channel, m); err != nil {
		rd.stop()
		return sample{}, err
	}
	if err := rd.wait(); err != nil {
		return sample{}, err
	}
	return meter.stop(m * k), nil
}

// connsRealTrial measures K pgx connections on the real server, all
// listening on channel, each read by its own goroutine, receiving m NOTIFYs.
func connsRealTrial(ctx context.Context, connString string, notifier *pgx.Conn, channel string, k, m int) (sample, error) {
	octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	conns, err := connectMany(octx, connString, slices.Repeat([]string{channel}, k))
	cancel()
	if err != nil {
		return sample{}, err
	}
	defer closeAll(conns)
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Minute)
	defer rcancel()
	var wg sync.WaitGroup
	errs := make(chan error, k)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range m {
				if _, err := c.WaitForNotification(rctx); err != nil {
					errs <- err
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
