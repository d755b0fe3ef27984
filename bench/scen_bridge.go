package main

// The bridge scenario: package natsbridge against the Manager alone, on one
// real server (wal_level = logical) and a NATS server with JetStream run in
// this process (internal/natstmp, file storage in a temporary directory):
//
//   - NOTIFY → NATS core: a backlog of N notifications drained by the
//     Manager alone (a Next loop) and by natsbridge.Notify into a NATS
//     subscriber, in turn, as the backlog scenario does; the ratio of rates.
//   - durable → JetStream: 8 writers commit 100 messages per transaction
//     (durable.Emit) while natsbridge.Durable publishes them asynchronously,
//     awaiting JetStream's acknowledgements per batch; messages per second
//     from the first commit until the JetStream stream holds them all.
//   - latency: one message in flight, from the producer's durable.Emit
//     (its commit) until JetStream's acknowledgement reaches the bridge.

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
	"github.com/seed-c59d106d/pgnotify/internal/natstmp"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
	"github.com/seed-c59d106d/pgnotify/natsbridge"
)

// Keys of the bridge scenario's NOTIFY rows.
const (
	brKeyManager = "manager"
	brKeyBridge  = "bridge"
)

// bridgeParams are the scenario's sizes.
type bridgeParams struct {
	backlog        int           // notifications drained per NOTIFY trial
	writers, perTx int           // durable producers and messages per transaction
	writeFor       time.Duration // how long they write
	rounds, warmup int           // one-in-flight round trips, and how many go uncounted first
}

func runBridge(ctx context.Context, cfg config, res *result) error {
	p := bridgeParams{backlog: 500_000, writers: 8, perTx: 100, writeFor: 3 * time.Second, rounds: 2000, warmup: 100}
	if cfg.quick {
		p = bridgeParams{backlog: 50_000, writers: 8, perTx: 100, writeFor: time.Second, rounds: 200, warmup: 20}
	}
	res.Params["backlog"] = p.backlog
	res.Params["writers"] = p.writers
	res.Params["per_tx"] = p.perTx
	res.Params["write_seconds"] = p.writeFor.Seconds()
	res.Params["latency_round_trips"] = p.rounds

	cl, err := startReal(ctx, res, pgtmp.WithLogicalReplication(0))
	if err != nil {
		return err
	}
	defer stopReal(cl)
	url := cl.ConnString()
	ns, err := natstmp.Start("")
	if err != nil {
		return err
	}
	defer ns.Stop()
	notifier, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer notifier.Close(context.WithoutCancel(ctx))

	kinds := []string{brKeyManager, brKeyBridge}
	drains := map[string][]sample{}
	var tput []sample
	var p50, p99 []float64
	for rep := range cfg.reps {
		s, err := bridgeDrainTrial(ctx, url, ns, notifier, fmt.Sprintf("br_%d", rep), rep, p)
		if err != nil {
			return fmt.Errorf("NOTIFY → NATS: %w", err)
		}
		for i, k := range kinds {
			drains[k] = append(drains[k], s[i])
		}
		ts, err := bridgeDurableTrial(ctx, url, ns, fmt.Sprintf("brd_%d", rep), p)
		if err != nil {
			return fmt.Errorf("durable → JetStream: %w", err)
		}
		tput = append(tput, ts)
		lat, err := bridgeLatencyTrial(ctx, url, ns, fmt.Sprintf("brl_%d", rep), p)
		if err != nil {
			return fmt.Errorf("durable → JetStream latency: %w", err)
		}
		p50, p99 = append(p50, us(lat.p50)), append(p99, us(lat.p99))
		if cfg.verbose {
			logf("bridge rep %d: Manager %s, Notify→NATS %s; durable→JetStream %s; p50 %v p99 %v", rep,
				fmtRate(s[0].rate()), fmtRate(s[1].rate()), fmtRate(ts.rate()), lat.p50, lat.p99)
		}
		logf("bridge: repetition %d of %d done", rep+1, cfg.reps)
	}

	for _, k := range kinds {
		r := row{Group: "notify", Key: k, Name: map[string]string{brKeyManager: "Manager alone (Next loop)", brKeyBridge: "natsbridge.Notify → NATS subscriber"}[k], Metrics: map[string]summary{}}
		addRateMetrics(r.Metrics, drains[k])
		res.Rows = append(res.Rows, r)
	}
	var rate []float64
	for _, s := range tput {
		rate = append(rate, s.rate())
	}
	res.Rows = append(res.Rows, row{Group: "durable", Key: "jetstream", Name: "natsbridge.Durable → JetStream",
		Metrics: map[string]summary{"rate": summarize(rate), "p50_us": summarize(p50), "p99_us": summarize(p99)}})

	mgr, br := findRow(res.Rows, "notify", brKeyManager), findRow(res.Rows, "notify", brKeyBridge)
	t := table{head: []string{"measure", "value", "goal"}}
	t.add("NOTIFY backlog drain, Manager alone", fmtSummary(mgr.Metrics["rate"], fmtRate), "")
	t.add("NOTIFY backlog drain, Notify → NATS core → subscriber", fmtSummary(br.Metrics["rate"], fmtRate),
		"")
	t.add("  bridge / Manager (ratio of medians)", fmtRatio(br.Metrics["rate"].Median, mgr.Metrics["rate"].Median), "≥ 0.5×")
	t.add("  whole-process CPU per notification, Manager / bridge (ns)",
		fmtSummary(mgr.Metrics["cpu_ns"], fmtNs)+" / "+fmtSummary(br.Metrics["cpu_ns"], fmtNs), "")
	d := findRow(res.Rows, "durable", "jetstream")
	t.add(fmt.Sprintf("durable → JetStream, %d msg/tx, %d writers (msg/s)", p.perTx, p.writers), fmtSummary(d.Metrics["rate"], fmtRate), "≥ 100 k/s")
	t.add("commit → JetStream ack, one in flight, p50", fmtSummary(d.Metrics["p50_us"], fmtUs), "")
	t.add("commit → JetStream ack, one in flight, p99", fmtSummary(d.Metrics["p99_us"], fmtUs), "")
	res.Markdown = fmt.Sprintf("natsbridge on one real server (wal_level = logical) and a NATS server with JetStream in this process "+
		"(file storage); median (min–max) over %d repetitions.\n\n"+
		"- NOTIFY → NATS: %d notifications (64-byte payloads) queued while the listener was paused, then drained by a Manager's Next loop "+
		"and, on a second listener, by natsbridge.Notify into a core NATS subscriber (counted when the subscriber has the last one); in turn, "+
		"the order rotated per repetition. CPU is the whole process's: the NATS server runs in it too.\n"+
		"- durable → JetStream: %d writers commit %d messages per transaction with durable.Emit for %v while natsbridge.Durable publishes "+
		"each batch asynchronously and awaits JetStream's acknowledgements before taking the next; from the first commit until the stream holds every message.\n"+
		"- Latency: durable.Emit of one message (its commit) to the bridge's receipt of JetStream's acknowledgement, %d round trips (%d more first, not counted).\n\n%s",
		cfg.reps, p.backlog, p.writers, p.perTx, p.writeFor, p.rounds, p.warmup, t.String())
	return nil
}

// bridgeDrainTrial queues p.backlog notifications for two paused listeners
// and drains them with a Manager alone and through natsbridge.Notify, in
// an order rotated by rep; it returns their samples in that fixed order.
func bridgeDrainTrial(ctx context.Context, url string, ns *natstmp.Server, notifier *pgx.Conn, channel string, rep int, p bridgeParams) ([]sample, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	conns := make([]*pgx.Conn, 2)
	for i := range conns {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			return nil, err
		}
		defer c.Close(context.WithoutCancel(ctx))
		if err := pgnotify.Listen(ctx, c, channel); err != nil {
			return nil, err
		}
		conns[i] = c
	}
	const batch = 50_000
	for lo := 1; lo <= p.backlog; lo += batch {
		if _, err := notifier.Exec(ctx, backlogSQL, channel, lo, min(lo+batch-1, p.backlog)); err != nil {
			return nil, fmt.Errorf("queueing notifications: %w", err)
		}
	}
	out := make([]sample, 2)
	for _, i := range turn(rep, 2) {
		runtime.GC()
		var err error
		if i == 0 {
			out[i], err = drainManager(ctx, conns[i], p.backlog)
		} else {
			out[i], err = drainBridge(ctx, conns[i], ns, p.backlog)
		}
		conns[i] = nil
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// drainManager reads n notifications from conn with a Manager, which then
// closes conn.
func drainManager(ctx context.Context, conn *pgx.Conn, n int) (sample, error) {
	m := pgnotify.NewManager()
	defer m.Close(context.WithoutCancel(ctx))
	meter := startMeter()
	if err := m.Add(ctx, conn); err != nil {
		return sample{}, err
	}
	for got := 0; got < n; {
		ev, err := m.Next(ctx)
		if err != nil {
			return sample{}, err
		}
		got += len(ev.Notifications)
	}
	return meter.stop(n), nil
}

// drainBridge bridges conn to NATS and counts n messages at a subscriber.
func drainBridge(ctx context.Context, conn *pgx.Conn, ns *natstmp.Server, n int) (sample, error) {
	pub, err := nats.Connect(ns.URL())
	if err != nil {
		return sample{}, err
	}
	defer pub.Close()
	subConn, err := nats.Connect(ns.URL())
	if err != nil {
		return sample{}, err
	}
	defer subConn.Close()
	var got atomic.Int64
	all := make(chan struct{})
	sub, err := subConn.Subscribe("pgnotify.>", func(*nats.Msg) {
		if got.Add(1) == int64(n) {
			close(all)
		}
	})
	if err != nil {
		return sample{}, err
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return sample{}, err
	}
	if err := subConn.Flush(); err != nil {
		return sample{}, err
	}
	m := pgnotify.NewManager()
	defer m.Close(context.WithoutCancel(ctx))
	bctx, stop := context.WithCancel(ctx)
	defer stop()
	meter := startMeter()
	if err := m.Add(ctx, conn); err != nil {
		return sample{}, err
	}
	done := make(chan error, 1)
	go func() { done <- natsbridge.Notify(bctx, m, pub) }()
	select {
	case <-all:
	case err := <-done:
		return sample{}, fmt.Errorf("natsbridge.Notify ended: %w", err)
	case <-ctx.Done():
		return sample{}, fmt.Errorf("%d of %d messages reached the subscriber: %w", got.Load(), n, ctx.Err())
	}
	s := meter.stop(n)
	stop()
	if err := <-done; !errors.Is(err, context.Canceled) {
		return sample{}, err
	}
	return s, nil
}

// jetStreamFor makes a JetStream context on nc and a fresh stream capturing
// prefix.>.
func jetStreamFor(ctx context.Context, nc *nats.Conn, name, prefix string, opts ...jetstream.JetStreamOpt) (jetstream.JetStream, jetstream.Stream, error) {
	js, err := jetstream.New(nc, append([]jetstream.JetStreamOpt{jetstream.WithPublishAsyncTimeout(10 * time.Second)}, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{prefix + ".>"}, Storage: jetstream.FileStorage})
	return js, st, err
}

// runDurableBridge opens a stream on a new slot and runs natsbridge.Durable
// into js until the returned stop is called, which also closes the stream
// and drops the slot.
func runDurableBridge(ctx context.Context, url, name, prefix string, js jetstream.JetStream) (stop func() error, err error) {
	s, done, err := durOpen(ctx, url, name, name, durable.WithManualAck())
	if err != nil {
		return nil, err
	}
	bctx, cancel := context.WithCancel(ctx)
	ended := make(chan error, 1)
	go func() { ended <- natsbridge.Durable(bctx, s, js, natsbridge.WithPrefix(prefix)) }()
	return func() error {
		cancel()
		err := <-ended
		if errors.Is(err, context.Canceled) {
			err = nil
		}
		return errors.Join(err, done())
	}, nil
}

// bridgeDurableTrial: p.writers producers emit p.perTx messages per
// transaction for p.writeFor; the sample runs from the first commit until
// JetStream holds every message.
func bridgeDurableTrial(ctx context.Context, url string, ns *natstmp.Server, name string, p bridgeParams) (sample, error) {
	ctx, cancel := context.WithTimeout(ctx, p.writeFor+5*time.Minute)
	defer cancel()
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		return sample{}, err
	}
	defer nc.Close()
	js, st, err := jetStreamFor(ctx, nc, name, name)
	if err != nil {
		return sample{}, err
	}
	defer js.DeleteStream(context.WithoutCancel(ctx), name)
	stop, err := runDurableBridge(ctx, url, name, name, js)
	if err != nil {
		return sample{}, err
	}
	conns := make([]*pgx.Conn, p.writers)
	for i := range conns {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			return sample{}, errors.Join(err, stop())
		}
		defer c.Close(context.WithoutCancel(ctx))
		conns[i] = c
	}
	var sent atomic.Int64
	m := startMeter()
	w, wctx := errgroup.WithContext(ctx)
	until := time.Now().Add(p.writeFor)
	for wi, c := range conns {
		w.Go(func() error {
			msgs := make([]pgnotify.Message, p.perTx)
			for seq := 0; time.Now().Before(until); seq++ {
				for j := range msgs {
					msgs[j] = pgnotify.Message{Channel: name, Payload: durPayload((wi*1_000_000+seq)*p.perTx + j)}
				}
				if err := durable.Emit(wctx, c, msgs...); err != nil {
					return err
				}
				sent.Add(int64(p.perTx))
			}
			return nil
		})
	}
	if err := w.Wait(); err != nil {
		return sample{}, errors.Join(err, stop())
	}
	want := uint64(sent.Load())
	for {
		info, err := st.Info(ctx)
		if err != nil {
			return sample{}, errors.Join(err, stop())
		}
		if info.State.Msgs >= want {
			break
		}
		select {
		case <-ctx.Done():
			return sample{}, errors.Join(fmt.Errorf("JetStream holds %d of %d messages: %w", info.State.Msgs, want, ctx.Err()), stop())
		case <-time.After(2 * time.Millisecond):
		}
	}
	s := m.stop(int(want))
	if info, err := st.Info(ctx); err == nil && info.State.Msgs != want {
		return sample{}, errors.Join(fmt.Errorf("JetStream holds %d messages, want %d", info.State.Msgs, want), stop())
	}
	return s, stop()
}

// bridgeLatencyTrial emits one message at a time and waits for JetStream's
// acknowledgement of it to reach the bridge.
func bridgeLatencyTrial(ctx context.Context, url string, ns *natstmp.Server, name string, p bridgeParams) (latencyStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	nc, err := nats.Connect(ns.URL())
	if err != nil {
		return latencyStats{}, err
	}
	defer nc.Close()
	acked := make(chan struct{}, 1)
	js, _, err := jetStreamFor(ctx, nc, name, name, jetstream.WithPublishAsyncAckHandler(func(jetstream.JetStream, *nats.Msg, *jetstream.PubAck) {
		acked <- struct{}{}
	}))
	if err != nil {
		return latencyStats{}, err
	}
	defer js.DeleteStream(context.WithoutCancel(ctx), name)
	stop, err := runDurableBridge(ctx, url, name, name, js)
	if err != nil {
		return latencyStats{}, err
	}
	producer, err := pgx.Connect(ctx, url)
	if err != nil {
		return latencyStats{}, errors.Join(err, stop())
	}
	defer producer.Close(context.WithoutCancel(ctx))
	lat := make([]time.Duration, 0, p.rounds)
	for i := range p.warmup + p.rounds {
		start := time.Now()
		if err := durable.Emit(ctx, producer, pgnotify.Message{Channel: name, Payload: durPayload(i)}); err != nil {
			return latencyStats{}, errors.Join(err, stop())
		}
		select {
		case <-acked:
		case <-ctx.Done():
			return latencyStats{}, errors.Join(ctx.Err(), stop())
		}
		if i >= p.warmup {
			lat = append(lat, time.Since(start))
		}
	}
	return latencyOf(lat), stop()
}
