// Command durablebench measures package durable against NOTIFY on the same
// server, in the same run: one-in-flight latency, throughput at 1 and 100
// messages per transaction, the replay rate of a backlog, and the consumer's
// CPU per message. It prints a markdown table.
//
//	go run ./durable/internal/durablebench [-n 2000] [-backlog 200000] [-writers 8] [-dur 3s]
//
// Without DATABASE_URL it starts a throwaway cluster (internal/pgtmp, with
// wal_level = logical). It is a program, not a test: its numbers depend on the
// machine and are never asserted.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-c59d106d/pgnotify"
	"github.com/seed-c59d106d/pgnotify/durable"
	"github.com/seed-c59d106d/pgnotify/internal/pgtmp"
)

var (
	rounds  = flag.Int("n", 2000, "one-in-flight round trips for latency")
	backlog = flag.Int("backlog", 200_000, "messages in the replay backlog")
	writers = flag.Int("writers", 8, "concurrent producers for throughput")
	dur     = flag.Duration("dur", 3*time.Second, "how long producers write in a throughput run")
	only    = flag.String("only", "", "run only this part: latency, throughput or replay")
	profile = flag.String("cpuprofile", "", "write a CPU profile of the replay's consumer to this file")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	ctx := context.Background()
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		c, err := pgtmp.Start(ctx, pgtmp.WithLogicalReplication(0))
		if err != nil {
			log.Fatal(err)
		}
		defer c.Stop()
		url = c.ConnString()
	}
	var ver string
	must(mustConnect(ctx, url).QueryRow(ctx, "SHOW server_version").Scan(&ver))
	fmt.Printf("PostgreSQL %s, GOMAXPROCS-visible CPUs: see `nproc`\n\n", ver)
	fmt.Println("| measure | NOTIFY | durable | durable/NOTIFY |")
	fmt.Println("| --- | --- | --- | --- |")

	if *only == "" || *only == "latency" {
		log.Print("latency")
		np50, np99 := notifyLatency(ctx, url)
		dp50, dp99 := durableLatency(ctx, url)
		row("latency p50, one in flight", np50, dp50)
		row("latency p99, one in flight", np99, dp99)
	}
	for _, per := range []int{1, 100} {
		if *only != "" && *only != "throughput" {
			break
		}
		log.Printf("throughput at %d per transaction", per)
		n := notifyThroughput(ctx, url, per)
		d := durableThroughput(ctx, url, per)
		rate(fmt.Sprintf("throughput, %d msg/tx, %d writers (msg/s)", per, *writers), n, d)
	}
	if *only != "" && *only != "replay" {
		return
	}
	log.Print("replay")
	r, cpuPerMsg, cpuShare := replay(ctx, url)
	fmt.Printf("| replay of a %d-message backlog (msg/s) | | %.0f | |\n", *backlog, r)
	fmt.Printf("| consumer CPU per message in replay | | %v | |\n", cpuPerMsg)
	fmt.Printf("| consumer CPU during replay (%% of one core) | | %.0f %% | |\n", cpuShare*100)
}

func row(name string, n, d time.Duration) {
	fmt.Printf("| %s | %v | %v | %.2f× |\n", name, n.Round(time.Microsecond), d.Round(time.Microsecond), float64(d)/float64(n))
}

func rate(name string, n, d float64) {
	fmt.Printf("| %s | %.0f | %.0f | %.2f× |\n", name, n, d, d/n)
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func mustConnect(ctx context.Context, url string) *pgx.Conn {
	conn, err := pgx.Connect(ctx, url)
	must(err)
	return conn
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(d)
	return d[len(d)/2], d[len(d)*99/100]
}

// notifyLatency: NOTIFY, then wait for it on a listening connection.
func notifyLatency(ctx context.Context, url string) (p50, p99 time.Duration) {
	l, s := mustConnect(ctx, url), mustConnect(ctx, url)
	defer l.Close(ctx)
	defer s.Close(ctx)
	_, err := l.Exec(ctx, "LISTEN lat")
	must(err)
	d := make([]time.Duration, 0, *rounds)
	for range *rounds {
		start := time.Now()
		_, err := s.Exec(ctx, "SELECT pg_notify('lat', 'x')")
		must(err)
		_, err = l.WaitForNotification(ctx)
		must(err)
		d = append(d, time.Since(start))
	}
	return percentiles(d)
}

// durableLatency: Emit, then wait for it on a stream.
func durableLatency(ctx context.Context, url string) (p50, p99 time.Duration) {
	st, done := openStream(ctx, url, "lat")
	defer done()
	s := mustConnect(ctx, url)
	defer s.Close(ctx)
	d := make([]time.Duration, 0, *rounds)
	for range *rounds {
		start := time.Now()
		must(durable.Emit(ctx, s, pgnotify.Message{Channel: "lat", Payload: "x"}))
		ev, err := st.Next(ctx)
		must(err)
		if ev.Kind != pgnotify.Batch {
			log.Fatalf("unexpected %v event", ev.Kind)
		}
		d = append(d, time.Since(start))
	}
	return percentiles(d)
}

var slotSeq int

// openStream makes a fresh slot and opens a stream on it.
func openStream(ctx context.Context, url, channel string) (*durable.Stream, func()) {
	slotSeq++
	slot := "bench_" + strconv.Itoa(slotSeq)
	must(durable.CreateSlot(ctx, url, slot))
	st, err := durable.Open(ctx, url, slot, []string{channel})
	must(err)
	return st, func() {
		must(st.Close(ctx))
		must(durable.DropSlot(ctx, url, slot))
	}
}

// produce runs the writers for dur, each committing transactions of per
// messages, and returns how many messages they committed.
func produce(ctx context.Context, url string, per int, send func(context.Context, *pgx.Conn, []pgnotify.Message) error) int64 {
	var total atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(*dur)
	for range *writers {
		conn := mustConnect(ctx, url)
		wg.Go(func() {
			defer conn.Close(ctx)
			msgs := make([]pgnotify.Message, per)
			for i := range msgs {
				msgs[i] = pgnotify.Message{Channel: "tp", Payload: "0123456789abcdef0123456789abcdef"}
			}
			for time.Now().Before(stop) {
				must(send(ctx, conn, msgs))
				total.Add(int64(per))
			}
		})
	}
	wg.Wait()
	return total.Load()
}

// notifyThroughput: messages per second from the first send to the last
// receipt.
func notifyThroughput(ctx context.Context, url string, per int) float64 {
	l := mustConnect(ctx, url)
	defer l.Close(ctx)
	_, err := l.Exec(ctx, "LISTEN tp")
	must(err)
	var got int64
	var total atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() {
		total.Store(produce(ctx, url, per, func(ctx context.Context, c *pgx.Conn, m []pgnotify.Message) error {
			// Distinct payloads: the server folds exact duplicates within a
			// transaction.
			for i := range m {
				m[i].Payload = strconv.Itoa(i)
			}
			return pgnotify.Notify(ctx, c, m...)
		}))
	})
	deadline := time.Now().Add(*dur + time.Minute)
	for {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := l.WaitForNotification(wctx)
		cancel()
		if err == nil {
			got++
		} else if time.Now().After(deadline) {
			log.Fatal("NOTIFY throughput: messages missing")
		}
		if t := total.Load(); t != 0 && got >= t { // total is set once the producers are done
			break
		}
	}
	wg.Wait()
	return float64(got) / time.Since(start).Seconds()
}

// durableThroughput: the same over a stream. The consumer's CPU is measured
// in replay, where it runs alone in this process.
func durableThroughput(ctx context.Context, url string, per int) float64 {
	st, done := openStream(ctx, url, "tp")
	defer done()
	var total atomic.Int64
	start := time.Now()
	go func() {
		total.Store(produce(ctx, url, per, func(ctx context.Context, c *pgx.Conn, m []pgnotify.Message) error {
			return durable.Emit(ctx, c, m...)
		}))
	}()
	var got int64
	for {
		// Bounded waits: the producers' total is known only once they stop.
		nctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		ev, err := st.Next(nctx)
		cancel()
		if err != nil && nctx.Err() == nil {
			log.Fatal(err)
		}
		got += int64(len(ev.Notifications))
		if t := total.Load(); t != 0 && got >= t {
			break
		}
	}
	return float64(got) / time.Since(start).Seconds()
}

// replay: a backlog written while no stream is open, then read by a new
// stream; measures the rate and this process's CPU (only the consumer runs).
func replay(ctx context.Context, url string) (rate float64, perMsg time.Duration, share float64) {
	slot := "bench_replay"
	must(durable.CreateSlot(ctx, url, slot))
	defer func() { must(durable.DropSlot(ctx, url, slot)) }()
	conn := mustConnect(ctx, url)
	msgs := make([]pgnotify.Message, 100)
	for i := range msgs {
		msgs[i] = pgnotify.Message{Channel: "rp", Payload: "0123456789abcdef0123456789abcdef"}
	}
	for range *backlog / 100 {
		must(durable.Emit(ctx, conn, msgs...))
	}
	conn.Close(ctx)
	if *profile != "" {
		f, err := os.Create(*profile)
		must(err)
		must(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	cpu0 := cpuTime()
	start := time.Now()
	st, err := durable.Open(ctx, url, slot, []string{"rp"})
	must(err)
	got := 0
	for got < *backlog/100*100 {
		ev, err := st.Next(ctx)
		must(err)
		got += len(ev.Notifications)
	}
	el := time.Since(start)
	cpu := cpuTime() - cpu0
	must(st.Close(ctx))
	return float64(got) / el.Seconds(), cpu / time.Duration(got), float64(cpu) / float64(el)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	must(syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
