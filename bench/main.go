// Command bench compares pgnotify with raw pgx, lib/pq and bare pgproto3,
// in the same run, and prints markdown tables of medians, min–max over the
// repetitions and ratios.
//
// It is a nested module (so that lib/pq never enters pgnotify's go.mod):
// from the repository root run
//
//	cd bench && go run . [flags] <scenario>...
//
// or ./bench/run [flags] <scenario>..., which does the same. Scenarios:
//
//	client   receive rate from a fake server streaming 64-byte notifications:
//	         rate, CPU ns and allocations per notification
//	backlog  drain a real server's queue of 2 M notifications that piled up
//	         while the listener was paused
//	latency  NOTIFY→application latency (p50/p99/max) at a fixed rate, real server
//	fanin    K = 10, 100, 1000 connections into one consumer: aggregate rate
//	         and latency, fake and real servers
//	idle     1000 managed connections with no traffic: CPU, memory, goroutines
//	drain    one drain pass over K = 100 and 1000 real connections vs a
//	         sequential loop and an errgroup(64) loop
//	bus      the Bus: fan-out to 1..10,000 subscriptions, idle memory, a
//	         stalled subscriber, subscribe + close churn, and the Bus vs a
//	         pgx connection per subscriber at K = 10, 100, 1000, and the Bus
//	         beside pgxlisten at K = 1, 50, 1000 (real server)
//	buspeer  only the Bus beside pgxlisten
//	busstorm the Bus's reconnect backoff: its backend killed every
//	         0.3–0.7 s for 20 s, and a server refusing connections for 30 s
//	durable  package durable against NOTIFY on one real server (wal_level =
//	         logical): one-in-flight latency, throughput at 1 and 100
//	         messages per transaction, replay of a 200 k backlog, client CPU
//	userbacklog  the backlog the way a user runs it (issue 20): consumer
//	         paused inside its first notification on a signal.NotifyContext
//	         ctx, 100 per transaction from two producers, timed from the
//	         resume; Manager and lib/pq, median of same-repetition ratios
//	userclient   the client scenario on a signal.NotifyContext ctx, Manager
//	         and lib/pq, median of same-repetition ratios
//	bridge   package natsbridge: NOTIFY → NATS core against the Manager alone,
//	         durable → JetStream throughput at 100 messages per transaction,
//	         and commit → JetStream acknowledgement latency
//	all      every scenario above, then chart and goals
//	chart    write chart.svg from the saved client, backlog and latency results
//	goals    print issues 4's, 8's and 9's goals against the saved results
//
// The program starts its own servers: a throwaway PostgreSQL cluster
// (internal/pgtmp) for the real-server scenarios, and for the fake one
// itself, re-executed as a child process so that its CPU time is not the
// client's. Every scenario interleaves the implementations within each
// repetition. Results are also saved as JSON under -out, which chart reads.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"
)

// config is what the flags say.
type config struct {
	quick     bool
	reps      int
	repsGiven bool // -reps was given: fairReps leaves it alone
	impls     string
	out       string
	verbose   bool
	// waitQuiet bounds the wait for an idle machine before each scenario.
	waitQuiet time.Duration
}

// result is one scenario's outcome, saved as JSON.
type result struct {
	Scenario string
	Quick    bool
	Reps     int
	Started  time.Time
	Machine  machine
	Params   map[string]any
	Rows     []row
	Markdown string
}

// row is one implementation in one setting, with its measured metrics.
type row struct {
	Group   string // e.g. "K=100 fake"; empty when the scenario has one
	Key     string
	Name    string
	Metrics map[string]summary
}

// machine describes where the run happened.
type machine struct {
	CPUs     int
	CPUModel string
	Go       string
	OS       string
	Postgres string `json:",omitempty"`
	// Pgnotify is the commit of the library under test, "+dirty" when its
	// files (outside bench/) differ from it.
	Pgnotify string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == fakeServerCmd {
		if err := runFakeServer(); err != nil {
			fmt.Fprintln(os.Stderr, "fake server:", err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this (client) process to `file`")
	flag.BoolVar(&cfg.quick, "quick", false, "smaller sizes and shorter runs")
	flag.IntVar(&cfg.reps, "reps", 0, "repetitions (default 5 for client, backlog and latency, 3 otherwise)")
	flag.StringVar(&cfg.impls, "impl", "", "comma-separated implementation keys to run, in this order (default all); see -list")
	flag.StringVar(&cfg.out, "out", "results", "directory for the JSON results and the chart")
	flag.BoolVar(&cfg.verbose, "v", false, "print each trial")
	flag.DurationVar(&cfg.waitQuiet, "waitquiet", 5*time.Minute, "before each scenario, wait up to this long for the machine's CPUs to be idle (0: don't)")
	flag.StringVar(&drainProfile, "drainprofile", "", "userbacklog: write a CPU profile of each drain alone to `prefix`-IMPL-CHANNEL.prof")
	list := flag.Bool("list", false, "list the implementation keys and exit")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go run . [flags] client|backlog|latency|fanin|idle|drain|bus|buspeer|busstorm|durable|bridge|userbacklog|userclient|all|chart|goals ...\n\nflags:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *list {
		for _, im := range singleImpls {
			fmt.Printf("client/backlog/latency/user*: %-9s %s\n", im.key, im.name)
		}
		for _, im := range fanImpls {
			fmt.Printf("fanin/idle:             %-9s %s\n", im.key, im.name)
		}
		fmt.Printf("idle:                   %-9s %s\n", "managerhc", "pgnotify Manager, health check every 1s")
		for _, im := range drainImpls {
			fmt.Printf("drain:                  %-9s %s\n", im.key, im.name)
		}
		return
	}
	scenarios := flag.Args()
	if len(scenarios) == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if len(scenarios) == 1 && scenarios[0] == "all" {
		scenarios = []string{"client", "backlog", "latency", "fanin", "idle", "drain", "bus", "durable", "userbacklog", "userclient", "chart", "goals"}
	}
	// Taken once, at start: go run has just compiled the library, and a
	// commit made while the scenarios run must not relabel them.
	buildCommit = libraryCommit()
	raiseFileLimit()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fatal(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	ctx := context.Background()
	for _, sc := range scenarios {
		if err := run(ctx, cfg, sc); err != nil {
			pprof.StopCPUProfile()
			fatal(fmt.Errorf("%s: %w", sc, err))
		}
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

// scenarioFuncs run one scenario each.
var scenarioFuncs = map[string]func(context.Context, config, *result) error{
	"client":      runClient,
	"backlog":     runBacklog,
	"latency":     runLatency,
	"fanin":       runFanin,
	"idle":        runIdle,
	"drain":       runDrain,
	"bus":         runBus,
	"busstorm":    runBusStorm,
	"buspeer":     runBusPeer,
	"durable":     runDurable,
	"bridge":      runBridge,
	"userbacklog": runUserBacklog,
	"userclient":  runUserClient,
}

func run(ctx context.Context, cfg config, name string) error {
	switch name {
	case "chart":
		return writeChart(cfg)
	case "goals":
		return writeGoals(cfg)
	}
	fn, ok := scenarioFuncs[name]
	if !ok {
		return fmt.Errorf("unknown scenario %q", name)
	}
	cfg.repsGiven = cfg.reps != 0
	if cfg.reps == 0 {
		cfg.reps = 3
		if name == "client" || name == "latency" || name == "backlog" {
			cfg.reps = 5
		}
	}
	if name == "client" || name == "latency" || name == "backlog" {
		cfg.reps = fairReps(cfg, len(selectImpls(singleImpls, func(i impl) string { return i.key }, cfg.impls)))
	}
	res := &result{Scenario: name, Quick: cfg.quick, Reps: cfg.reps, Started: time.Now(),
		Machine: describeMachine(), Params: map[string]any{}}
	fmt.Printf("## %s\n\n", name)
	fmt.Printf("%s, %d CPUs, %s, %s; pgnotify %s; %d repetitions%s\n\n", res.Machine.CPUModel, res.Machine.CPUs,
		res.Machine.Go, res.Machine.OS, res.Machine.Pgnotify, cfg.reps, map[bool]string{true: ", -quick"}[cfg.quick])
	if cfg.waitQuiet > 0 {
		res.Params["cpu_busy_before"] = waitQuiet(cfg.waitQuiet)
	}
	res.Params["loadavg_before"] = loadAvg()
	if err := fn(ctx, cfg, res); err != nil {
		return err
	}
	res.Params["loadavg_after"] = loadAvg()
	res.Markdown += fmt.Sprintf("\n1-minute load average before / after: %s / %s (it counts this run's own server processes too).\n",
		res.Params["loadavg_before"], res.Params["loadavg_after"])
	if res.Machine.Postgres != "" {
		fmt.Printf("Server: %s\n\n", res.Machine.Postgres)
	}
	fmt.Println(res.Markdown)
	return save(cfg, res)
}

// save writes res to OUT/<scenario>[-quick].json.
func save(cfg config, res *result) error {
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(resultPath(cfg, res.Scenario, res.Quick), b, 0o644)
}

func resultPath(cfg config, scenario string, quick bool) string {
	name := scenario
	if quick {
		name += "-quick"
	}
	return filepath.Join(cfg.out, name+".json")
}

// load reads a saved result, preferring the full run over the quick one.
func load(cfg config, scenario string) (*result, error) {
	var errs []error
	for _, quick := range []bool{false, true} {
		b, err := os.ReadFile(resultPath(cfg, scenario, quick))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var res result
		if err := json.Unmarshal(b, &res); err != nil {
			return nil, err
		}
		return &res, nil
	}
	return nil, errors.Join(errs...)
}

func describeMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	m.Pgnotify = buildCommit
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		m.OS += " (Linux " + strings.TrimSpace(string(out)) + ")"
	}
	return m
}

// logf prints progress to stderr, so that stdout is the report.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// loadAvg returns the 1-minute load average, so that a report shows
// whether something else was running.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// buildCommit is libraryCommit at start.
var buildCommit string

// libraryCommit names the pgnotify source this binary was built from: the
// parent repository's HEAD, marked dirty when files outside bench/ differ.
func libraryCommit() string {
	out, err := exec.Command("git", "-C", "..", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", "..", "status", "--porcelain", "--", ".", ":!bench", ":!BENCHMARKS.md").Output(); err == nil && len(strings.TrimSpace(string(st))) > 0 {
		c += "+dirty"
	}
	return c
}
