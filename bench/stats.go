package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// meter takes the client process's resource counters at two instants.
type meter struct {
	wall time.Time
	cpu  time.Duration // user + system, this process only
	csw  int64         // voluntary context switches
	mem  memCounts
}

// cpuTime returns this process's user + system CPU time.
func cpuTime() time.Duration {
	t, _ := cpuAndSwitches()
	return t
}

// cpuAndSwitches returns this process's user + system CPU time and its
// voluntary context switches (a thread going to sleep: futex, epoll), which
// show how often its goroutines wait for each other across threads.
func cpuAndSwitches() (time.Duration, int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Nvcsw
}

// memCounts are the heap's cumulative counters: allocations, bytes
// allocated and completed GC cycles.
type memCounts struct {
	mallocs, bytes uint64
	gcs            uint32
}

// memNow reads memCounts. ReadMemStats stops the world briefly; it is
// called outside timed loops.
func memNow() memCounts {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memCounts{mallocs: ms.Mallocs, bytes: ms.TotalAlloc, gcs: ms.NumGC}
}

func startMeter() meter {
	cpu, csw := cpuAndSwitches()
	return meter{wall: time.Now(), cpu: cpu, csw: csw, mem: memNow()}
}

// sample is what one timed run of n notifications cost.
type sample struct {
	n       int
	wall    time.Duration
	cpu     time.Duration
	mallocs uint64
	bytes   uint64 // heap bytes allocated
	gcs     uint32 // GC cycles completed
	csw     int64  // voluntary context switches
}

func (m meter) stop(n int) sample {
	wall := time.Since(m.wall)
	cpu, csw := cpuAndSwitches()
	mem := memNow()
	return sample{n: n, wall: wall, cpu: cpu - m.cpu, mallocs: mem.mallocs - m.mem.mallocs,
		bytes: mem.bytes - m.mem.bytes, gcs: mem.gcs - m.mem.gcs, csw: csw - m.csw}
}

// rate returns notifications per second.
func (s sample) rate() float64 { return float64(s.n) / s.wall.Seconds() }

// cpuPer returns CPU nanoseconds per notification.
func (s sample) cpuPer() float64 { return float64(s.cpu.Nanoseconds()) / float64(s.n) }

// allocsPer returns heap allocations per notification.
func (s sample) allocsPer() float64 { return float64(s.mallocs) / float64(s.n) }

// bytesPer returns heap bytes allocated per notification.
func (s sample) bytesPer() float64 { return float64(s.bytes) / float64(s.n) }

// summary is a value measured over several repetitions.
type summary struct {
	Median, Min, Max float64
	Values           []float64
}

func summarize(vs []float64) summary {
	if len(vs) == 0 {
		return summary{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	return summary{Median: median(s), Min: s[0], Max: s[len(s)-1], Values: vs}
}

// median of sorted values.
func median(s []float64) float64 {
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile of sorted durations (nearest rank).
func percentile(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}

// table builds a markdown table.
type table struct {
	head []string
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) String() string {
	var b strings.Builder
	b.WriteString("| " + strings.Join(t.head, " | ") + " |\n")
	b.WriteString("|")
	for i := range t.head {
		if i == 0 {
			b.WriteString(" --- |")
		} else {
			b.WriteString(" ---: |")
		}
	}
	b.WriteString("\n")
	for _, r := range t.rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	return b.String()
}

// fmtSummary prints "median (min–max)" with f formatting each number.
func fmtSummary(s summary, f func(float64) string) string {
	if math.IsNaN(s.Median) {
		return "—"
	}
	if len(s.Values) == 1 {
		return f(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", f(s.Median), f(s.Min), f(s.Max))
}

// fmtRatio prints a/b as "1.23×".
func fmtRatio(a, b float64) string {
	if b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func fmtMps(v float64) string { return fmt.Sprintf("%.2f M/s", v/1e6) }
func fmtKps(v float64) string { return fmt.Sprintf("%.1f k/s", v/1e3) }
func fmtRate(v float64) string {
	if v >= 1e6 {
		return fmtMps(v)
	}
	return fmtKps(v)
}
func fmtNs(v float64) string     { return fmt.Sprintf("%.0f", v) }
func fmtAllocs(v float64) string { return fmt.Sprintf("%.2f", v) }
func fmtUs(v float64) string     { return fmt.Sprintf("%.0f µs", v) }
func fmtMs(v float64) string     { return fmt.Sprintf("%.1f ms", v) }
func fmtKiB(v float64) string    { return fmt.Sprintf("%.1f KiB", v) }
func fmtPct(v float64) string    { return fmt.Sprintf("%.3f%%", v) }
func fmtF2(v float64) string     { return fmt.Sprintf("%.2f", v) }

// rssBytes returns the process's resident set size from /proc.
func rssBytes() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return math.NaN()
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				kb, err := strconv.ParseFloat(f[0], 64)
				if err == nil {
					return kb * 1024
				}
			}
		}
	}
	return math.NaN()
}

// raiseFileLimit lifts the open-files limit to its hard maximum, for 1000+
// connections (and their servers' sockets, when the server is a child).
func raiseFileLimit() {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return
	}
	l.Cur = l.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
}

// cpuBusy returns the fraction of the machine's CPU time spent busy (all
// processes) over d, from /proc/stat.
func cpuBusy(d time.Duration) float64 {
	read := func() (busy, total float64) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0
		}
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		for i, v := range f[1:] {
			x, _ := strconv.ParseFloat(v, 64)
			total += x
			if i != 3 && i != 4 { // idle, iowait
				busy += x
			}
		}
		return busy, total
	}
	b0, t0 := read()
	time.Sleep(d)
	b1, t1 := read()
	if t1 <= t0 {
		return 0
	}
	return (b1 - b0) / (t1 - t0)
}

// waitQuiet waits, up to limit, until the machine is mostly idle, so that a
// scenario does not start while another job (a compile, a test run) holds
// the CPUs. It returns the busy fraction it last saw.
func waitQuiet(limit time.Duration) float64 {
	deadline := time.Now().Add(limit)
	for {
		busy := cpuBusy(2 * time.Second)
		if busy < 0.10 || time.Now().After(deadline) {
			return busy
		}
		logf("machine busy (%.0f%% CPU): waiting for it to quiet down", busy*100)
	}
}

// addRateMetrics summarises the repetitions of one implementation's
// throughput trials into m: receive rate, client CPU and allocations per
// notification.
func addRateMetrics(m map[string]summary, samples []sample) {
	var rate, cpu, allocs, bytes, gcs []float64
	for _, s := range samples {
		rate = append(rate, s.rate())
		cpu = append(cpu, s.cpuPer())
		allocs = append(allocs, s.allocsPer())
		bytes = append(bytes, s.bytesPer())
		gcs = append(gcs, float64(s.gcs))
	}
	m["rate"] = summarize(rate)
	m["cpu_ns"] = summarize(cpu)
	m["allocs"] = summarize(allocs)
	m["bytes"] = summarize(bytes)
	m["gcs"] = summarize(gcs)
}
