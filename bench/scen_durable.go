package main

// The durable scenario: package durable (messages through the WAL and a
// logical replication slot) against NOTIFY on the same real server
// (wal_level = logical), in the same run, interleaved per repetition:
// one-in-flight latency, throughput at 1 and 100 messages per transaction,
// the replay of a backlog, and the client's and the server process's CPU
// during that replay.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

// Keys of the durable scenario's rows: the two ways a message travels.
const (
	durKeyNotify  = "notify"
	durKeyDurable = "durable"
)

// durKinds is the order the two run in within a repetition.
var durKinds = []string{durKeyNotify, durKeyDurable}

// durPerTx are the messages per transaction of the throughput trials.
var durPerTx = []int{1, 100}

// durParams are the scenario's sizes.
type durParams struct {
	rounds, warmup int           // one-in-flight round trips, and how many go uncounted first
	writers        int           // concurrent producers in a throughput trial
	writeFor       time.Duration // how long they write
	backlog        int           // messages in the replay backlog, written 100 per transaction
}

// durEnd is the payload of the message that ends a throughput trial: the
// producers send it once they are done, and commit order puts it last.
const durEnd = "end"

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// runDurable measures package durable against NOTIFY on one throwaway
// server with wal_level = logical.
func runDurable(ctx context.Context, cfg config, res *result) error {
	p := durParams{rounds: 5000, warmup: 100, writers: 8, writeFor: 3 * time.Second, backlog: 200_000}
	if cfg.quick {
		p = durParams{rounds: 500, warmup: 50, writers: 8, writeFor: time.Second, backlog: 20_000}
	}
	res.Params["latency_round_trips"] = p.rounds
	res.Params["latency_warmup_skipped"] = p.warmup
	res.Params["writers"] = p.writers
	res.Params["write_seconds"] = p.writeFor.Seconds()
	res.Params["backlog"] = p.backlog
	res.Params["payload_bytes"] = 32

	cl, err := startReal(ctx, res, pgtmp.WithLogicalReplication(0))
	if err != nil {
		return err
	}
	defer stopReal(cl)
	url := cl.ConnString()

	type trials struct {
		lat    []latencyStats
		tput   map[int][]sample
		replay []replayStats
	}
	got := map[string]*trials{}
	for _, k := range durKinds {
		got[k] = &trials{tput: map[int][]sample{}}
	}
	for rep := range cfg.reps {
		for _, k := range durKinds {
			st, err := durLatencyTrial(ctx, url, k, fmt.Sprintf("lat_%d", rep), p)
			if err != nil {
				return fmt.Errorf("%s latency: %w", k, err)
			}
			got[k].lat = append(got[k].lat, st)
			if cfg.verbose {
				logf("durable rep %d latency    %-7s p50 %v p99 %v", rep, k, st.p50, st.p99)
			}
		}
		for _, per := range durPerTx {
			for _, k := range durKinds {
				s, err := durThroughputTrial(ctx, url, k, fmt.Sprintf("tp_%d_%d", rep, per), per, p)
				if err != nil {
					return fmt.Errorf("%s throughput at %d per transaction: %w", k, per, err)
				}
				got[k].tput[per] = append(got[k].tput[per], s)
				if cfg.verbose {
					logf("durable rep %d %3d msg/tx %-7s %s (%d messages)", rep, per, k, fmtRate(s.rate()), s.n)
				}
			}
		}
		for _, k := range durKinds {
			r, err := durReplayTrial(ctx, url, k, fmt.Sprintf("rp_%d", rep), p.backlog)
			if err != nil {
				return fmt.Errorf("%s replay: %w", k, err)
			}
			got[k].replay = append(got[k].replay, r)
			if cfg.verbose {
				logf("durable rep %d replay     %-7s %s, client %.0f ns/msg = %.0f%% of a core, server process %.0f%% of a core",
					rep, k, fmtRate(r.rate()), r.cpuPer(), r.clientShare()*100, r.serverShare()*100)
			}
		}
		logf("durable: repetition %d of %d done", rep+1, cfg.reps)
	}

	for _, k := range durKinds {
		t := got[k]
		r := row{Key: k, Name: map[string]string{durKeyNotify: "NOTIFY", durKeyDurable: "durable"}[k], Metrics: map[string]summary{}}
		var p50, p99 []float64
		for _, s := range t.lat {
			p50 = append(p50, us(s.p50))
			p99 = append(p99, us(s.p99))
		}
		r.Metrics["p50_us"] = summarize(p50)
		r.Metrics["p99_us"] = summarize(p99)
		for _, per := range durPerTx {
			var rate, cpu []float64
			for _, s := range t.tput[per] {
				rate = append(rate, s.rate())
				cpu = append(cpu, s.cpuPer())
			}
			r.Metrics[fmt.Sprintf("tput%d_rate", per)] = summarize(rate)
			r.Metrics[fmt.Sprintf("tput%d_cpu_ns", per)] = summarize(cpu)
		}
		var rate, cpu, share, server, atMax []float64
		for _, s := range t.replay {
			rate = append(rate, s.rate())
			cpu = append(cpu, s.cpuPer())
			share = append(share, s.clientShare()*100)
			server = append(server, s.serverShare()*100)
			if k == durKeyDurable && s.server > 0 { // NOTIFY has no walsender
				atMax = append(atMax, s.cpu.Seconds()/s.server.Seconds()*100)
			}
		}
		r.Metrics["replay_rate"] = summarize(rate)
		r.Metrics["replay_cpu_ns"] = summarize(cpu)
		r.Metrics["replay_client_pct"] = summarize(share)
		r.Metrics["replay_server_pct"] = summarize(server)
		if len(atMax) > 0 { // JSON has no NaN
			r.Metrics["replay_client_at_server_max_pct"] = summarize(atMax)
		}
		res.Rows = append(res.Rows, r)
	}

	n, d := findRow(res.Rows, "", durKeyNotify), findRow(res.Rows, "", durKeyDurable)
	t := table{head: []string{"measure", "NOTIFY", "durable", "durable / NOTIFY"}}
	add := func(what, metric string, f func(float64) string) {
		t.add(what, fmtSummary(n.Metrics[metric], f), fmtSummary(d.Metrics[metric], f),
			fmtRatio(d.Metrics[metric].Median, n.Metrics[metric].Median))
	}
	pct := func(v float64) string { return fmt.Sprintf("%.0f %%", v) }
	add("latency p50, one in flight", "p50_us", fmtUs)
	add("latency p99, one in flight", "p99_us", fmtUs)
	for _, per := range durPerTx {
		add(fmt.Sprintf("throughput, %d msg/tx, %d writers (msg/s)", per, p.writers), fmt.Sprintf("tput%d_rate", per), fmtRate)
	}
	for _, per := range durPerTx {
		add(fmt.Sprintf("whole client CPU per message, %d msg/tx (ns; %d writers + consumer)", per, p.writers),
			fmt.Sprintf("tput%d_cpu_ns", per), fmtNs)
	}
	add(fmt.Sprintf("replay of a %d-message backlog (msg/s)", p.backlog), "replay_rate", fmtRate)
	add("consumer CPU per message in replay (ns)", "replay_cpu_ns", fmtNs)
	add("consumer CPU during replay (% of one core)", "replay_client_pct", pct)
	add("server process CPU during replay (% of one core)", "replay_server_pct", pct)
	m := "replay_client_at_server_max_pct"
	t.add("consumer CPU with the walsender at one full core (% of one core; consumer CPU / walsender CPU)", "n/a",
		fmtSummary(d.Metrics[m], pct), "")

	res.Markdown = fmt.Sprintf("Package durable against NOTIFY on one real server (wal_level = logical, synchronous_commit = on, fsync off), "+
		"interleaved per repetition (NOTIFY, then durable, for each measure); 32-byte payloads; median (min–max) over %d repetitions.\n\n"+
		"- Latency: one message in flight, %d round trips per trial (the first %d not counted): send (`SELECT pg_notify` / `durable.Emit`, "+
		"each its own transaction) on one connection, receive (`pgx WaitForNotification` / `Stream.Next`) on another; p50 and p99 of each trial.\n"+
		"- Throughput: %d writers on their own connections commit transactions of 1 or 100 messages (`pgnotify.Notify` / `durable.Emit`) "+
		"for %v, one consumer receives; messages per second from the first send until the consumer has the last one. "+
		"The client CPU there is the whole process's: writers and consumer.\n"+
		"- Replay: %d messages written 100 per transaction while nobody reads (NOTIFY: a listener connected but paused, as NOTIFY keeps "+
		"nothing for a disconnected one; durable: no stream open, the slot holds them), then read to the end. The durable clock starts "+
		"before `Open` (connection and slot start included); NOTIFY's at the first read. The consumer's CPU is this process's "+
		"(only the consumer runs); the server process is the walsender (durable; its whole life, which begins at `Open`) or the listener's backend (NOTIFY; "+
		"during the read only: it sent what the socket buffer took while the listener was paused), from /proc/<pid>/stat in 10 ms ticks. "+
		"On a shared 2-core machine neither process may get a full core, so the consumer's CPU at the walsender's maximum rate is "+
		"taken as the ratio of their CPU times over the same replay: what the consumer would need if the walsender ran flat out.\n\n%s",
		cfg.reps, p.rounds, p.warmup, p.writers, p.writeFor, p.backlog, t.String())
	return nil
}

// durPayload is a distinct 32-byte payload: the server folds exact duplicate
// NOTIFYs within a transaction, so every message differs.
func durPayload(i int) string { return fmt.Sprintf("%032d", i) }

// durSlot creates a slot for one trial and returns a function that drops it.
func durSlot(ctx context.Context, url, name string) (drop func() error, err error) {
	slot := "bench_" + name
	if err := durable.CreateSlot(ctx, url, slot); err != nil {
		return nil, err
	}
	return func() error { return durable.DropSlot(context.WithoutCancel(ctx), url, slot) }, nil
}

// durOpen creates a slot and opens a stream on it for channel; done closes
// the stream and drops the slot.
func durOpen(ctx context.Context, url, name, channel string, opts ...durable.Option) (st *durable.Stream, done func() error, err error) {
	drop, err := durSlot(ctx, url, name)
	if err != nil {
		return nil, nil, err
	}
	st, err = durable.Open(ctx, url, "bench_"+name, []string{channel}, opts...)
	if err != nil {
		return nil, nil, errors.Join(err, drop())
	}
	return st, func() error {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		return errors.Join(st.Close(cctx), drop())
	}, nil
}

// durLatencyTrial sends one message, waits for it, and sends the next.
func durLatencyTrial(ctx context.Context, url, kind, channel string, p durParams) (latencyStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	sender, err := pgx.Connect(ctx, url)
	if err != nil {
		return latencyStats{}, err
	}
	defer sender.Close(context.WithoutCancel(ctx))
	var send func(i int) error
	var recv func() error
	switch kind {
	case durKeyNotify:
		l, err := pgx.Connect(ctx, url)
		if err != nil {
			return latencyStats{}, err
		}
		defer l.Close(context.WithoutCancel(ctx))
		if _, err := l.Exec(ctx, "LISTEN "+channel); err != nil {
			return latencyStats{}, err
		}
		send = func(i int) error {
			_, err := sender.Exec(ctx, "SELECT pg_notify($1, $2)", channel, durPayload(i))
			return err
		}
		recv = func() error {
			_, err := l.WaitForNotification(ctx)
			return err
		}
	case durKeyDurable:
		st, done, err := durOpen(ctx, url, channel, channel)
		if err != nil {
			return latencyStats{}, err
		}
		defer func() {
			if derr := done(); derr != nil {
				logf("durable latency: closing: %v", derr)
			}
		}()
		send = func(i int) error {
			return durable.Emit(ctx, sender, pgnotify.Message{Channel: channel, Payload: durPayload(i)})
		}
		recv = func() error {
			ev, err := st.Next(ctx)
			if err == nil && (ev.Kind != pgnotify.Batch || len(ev.Notifications) != 1) {
				err = fmt.Errorf("unexpected %v event with %d notifications", ev.Kind, len(ev.Notifications))
			}
			return err
		}
	}
	lat := make([]time.Duration, 0, p.rounds)
	for i := range p.warmup + p.rounds {
		start := time.Now()
		if err := send(i); err != nil {
			return latencyStats{}, err
		}
		if err := recv(); err != nil {
			return latencyStats{}, err
		}
		if i >= p.warmup {
			lat = append(lat, time.Since(start))
		}
	}
	return latencyOf(lat), nil
}

// durThroughputTrial runs p.writers producers committing per messages per
// transaction for p.writeFor while one consumer receives. The producers send
// durEnd when they are done; the sample counts the other messages, from the
// first send until the consumer has durEnd, and this whole process's CPU.
func durThroughputTrial(ctx context.Context, url, kind, channel string, per int, p durParams) (sample, error) {
	ctx, cancel := context.WithTimeout(ctx, p.writeFor+2*time.Minute)
	defer cancel()
	send := func(ctx context.Context, c *pgx.Conn, msgs ...pgnotify.Message) error {
		return pgnotify.Notify(ctx, c, msgs...)
	}
	// next returns the payloads of the next batch.
	var next func() ([]string, error)
	switch kind {
	case durKeyNotify:
		l, err := pgx.Connect(ctx, url)
		if err != nil {
			return sample{}, err
		}
		defer l.Close(context.WithoutCancel(ctx))
		if _, err := l.Exec(ctx, "LISTEN "+channel); err != nil {
			return sample{}, err
		}
		one := make([]string, 1)
		next = func() ([]string, error) {
			n, err := l.WaitForNotification(ctx)
			if err != nil {
				return nil, err
			}
			one[0] = n.Payload
			return one, nil
		}
	case durKeyDurable:
		st, done, err := durOpen(ctx, url, channel, channel)
		if err != nil {
			return sample{}, err
		}
		defer func() {
			if derr := done(); derr != nil {
				logf("durable throughput: closing: %v", derr)
			}
		}()
		send = func(ctx context.Context, c *pgx.Conn, msgs ...pgnotify.Message) error {
			return durable.Emit(ctx, c, msgs...)
		}
		var buf []string
		next = func() ([]string, error) {
			ev, err := st.Next(ctx)
			if err != nil {
				return nil, err
			}
			buf = buf[:0]
			for _, n := range ev.Notifications {
				buf = append(buf, n.Payload)
			}
			return buf, nil
		}
	}
	conns := make([]*pgx.Conn, p.writers)
	for i := range conns {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			return sample{}, err
		}
		defer c.Close(context.WithoutCancel(ctx))
		conns[i] = c
	}

	var sent atomic.Int64
	m := startMeter()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		w, wctx := errgroup.WithContext(gctx)
		stop := time.Now().Add(p.writeFor)
		for wi, c := range conns {
			w.Go(func() error {
				msgs := make([]pgnotify.Message, per)
				for seq := 0; time.Now().Before(stop); seq++ {
					for j := range msgs {
						msgs[j] = pgnotify.Message{Channel: channel, Payload: durPayload((wi*1_000_000+seq)*per + j)}
					}
					if err := send(wctx, c, msgs...); err != nil {
						return err
					}
					sent.Add(int64(per))
				}
				return nil
			})
		}
		if err := w.Wait(); err != nil {
			return err
		}
		return send(gctx, conns[0], pgnotify.Message{Channel: channel, Payload: durEnd})
	})
	var got int64
	err := func() error {
		for {
			batch, err := next()
			if err != nil {
				return err
			}
			for _, pl := range batch {
				if pl == durEnd {
					return nil
				}
				got++
			}
		}
	}()
	s := m.stop(int(got))
	if err != nil {
		cancel() // stop the writers
	}
	if werr := g.Wait(); werr != nil || err != nil {
		return sample{}, errors.Join(err, werr)
	}
	if got != sent.Load() {
		return sample{}, fmt.Errorf("sent %d messages, received %d", sent.Load(), got)
	}
	return s, nil
}

// replayStats is one replay: the client's sample and the server process's
// CPU over the same time.
type replayStats struct {
	sample
	server time.Duration
}

func (r replayStats) clientShare() float64 { return r.cpu.Seconds() / r.wall.Seconds() }
func (r replayStats) serverShare() float64 { return r.server.Seconds() / r.wall.Seconds() }

// durReplayTrial writes n messages, 100 per transaction, while nobody reads
// them, then reads them all.
func durReplayTrial(ctx context.Context, url, kind, channel string, n int) (replayStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	writer, err := pgx.Connect(ctx, url)
	if err != nil {
		return replayStats{}, err
	}
	defer writer.Close(context.WithoutCancel(ctx))
	send := func(ctx context.Context, c *pgx.Conn, msgs ...pgnotify.Message) error {
		return pgnotify.Notify(ctx, c, msgs...)
	}
	var l *pgx.Conn
	var drop func() error
	switch kind {
	case durKeyNotify:
		if l, err = pgx.Connect(ctx, url); err != nil {
			return replayStats{}, err
		}
		defer l.Close(context.WithoutCancel(ctx))
		if _, err := l.Exec(ctx, "LISTEN "+channel); err != nil {
			return replayStats{}, err
		}
	case durKeyDurable:
		if drop, err = durSlot(ctx, url, channel); err != nil {
			return replayStats{}, err
		}
		defer func() {
			if derr := drop(); derr != nil {
				logf("durable replay: dropping the slot: %v", derr)
			}
		}()
		send = func(ctx context.Context, c *pgx.Conn, msgs ...pgnotify.Message) error {
			return durable.Emit(ctx, c, msgs...)
		}
	}
	msgs := make([]pgnotify.Message, 100)
	for i := 0; i < n; i += len(msgs) {
		for j := range msgs {
			msgs[j] = pgnotify.Message{Channel: channel, Payload: durPayload(i + j)}
		}
		if err := send(ctx, writer, msgs...); err != nil {
			return replayStats{}, err
		}
	}
	total := n / len(msgs) * len(msgs)

	switch kind {
	case durKeyNotify:
		pid := int(l.PgConn().PID())
		srv0, err := procCPU(pid)
		if err != nil {
			return replayStats{}, err
		}
		m := startMeter()
		for range total {
			if _, err := l.WaitForNotification(ctx); err != nil {
				return replayStats{}, err
			}
		}
		s := m.stop(total)
		srv1, err := procCPU(pid)
		if err != nil {
			return replayStats{}, err
		}
		return replayStats{sample: s, server: srv1 - srv0}, nil
	default:
		m := startMeter()
		st, err := durable.Open(ctx, url, "bench_"+channel, []string{channel})
		if err != nil {
			return replayStats{}, err
		}
		defer func() {
			cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer ccancel()
			if cerr := st.Close(cctx); cerr != nil {
				logf("durable replay: closing: %v", cerr)
			}
		}()
		got := 0
		for got < total {
			ev, err := st.Next(ctx)
			if err != nil {
				return replayStats{}, err
			}
			got += len(ev.Notifications)
		}
		s := m.stop(got)
		// The walsender started with Open: its whole CPU time is the replay's.
		var pid int
		if err := writer.QueryRow(ctx, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
			"bench_"+channel).Scan(&pid); err != nil {
			return replayStats{}, fmt.Errorf("walsender pid: %w", err)
		}
		srv, err := procCPU(pid)
		if err != nil {
			return replayStats{}, err
		}
		if got != total {
			return replayStats{}, fmt.Errorf("wrote %d messages, received %d", total, got)
		}
		return replayStats{sample: s, server: srv}, nil
	}
}

// procCPU returns a process's user + system CPU time from /proc/<pid>/stat
// (readable for another user's processes, such as the server's).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing one. Fields 14 and 15 are utime and stime.
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}
