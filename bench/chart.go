package main

import (
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// series is one bar per implementation in a panel.
type series struct {
	label  string
	color  string
	metric string
	res    *result
}

// writeChart draws chart.svg from the saved results: receive rate per
// implementation (client and backlog), latency percentiles (p50, p99), and,
// when the bus results exist, the Bus's deliveries/s against a connection
// per subscriber at each K. Bars are medians; whiskers span min–max over
// the repetitions.
func writeChart(cfg config) error {
	client, err := load(cfg, "client")
	if err != nil {
		return fmt.Errorf("chart needs the client results (run client first): %w", err)
	}
	backlog, _ := load(cfg, "backlog")
	latency, _ := load(cfg, "latency")

	var b strings.Builder
	const width = 1000
	y := 0
	var body strings.Builder
	rate := []series{{"fake server stream (client)", "#4c78a8", "rate", client}}
	if backlog != nil {
		rate = append(rate, series{"real server backlog", "#f58518", "rate", backlog})
	}
	y = panel(&body, y, width, "Receive rate, million notifications/s (higher is better)", client, rate, 1e-6, "%.2f")
	if latency != nil {
		lat := []series{
			{"p50", "#54a24b", "p50_us", latency},
			{"p99", "#e45756", "p99_us", latency},
		}
		y = panel(&body, y+20, width, "NOTIFY→application latency on a real server at 2000/s, µs (lower is better)", latency, lat, 1, "%.0f")
	}
	if bus, _ := load(cfg, "bus"); bus != nil {
		ref, ss := busChartSeries(bus)
		y = panel(&body, y+20, width, "Bus vs a pgx connection per subscriber (real server, one channel): million deliveries/s (higher is better)", ref, ss, 1e-6, "%.3f")
	}
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		width, y+30, width, y+30)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	b.WriteString(body.String())
	m := client.Machine
	fmt.Fprintf(&b, `<text x="10" y="%d" fill="#555" font-size="11">%s</text>`+"\n", y+20,
		html.EscapeString(fmt.Sprintf("pgnotify %s bench: %s, %d CPUs, %s; bars are medians, whiskers min–max over the repetitions", m.Pgnotify, m.CPUModel, m.CPUs, m.Go)))
	b.WriteString("</svg>\n")
	path := filepath.Join(cfg.out, "chart.svg")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s\n", path)
	return nil
}

// panel draws one horizontal grouped bar chart whose rows are ref's
// implementations, and returns the y below it.
func panel(b *strings.Builder, y0, width int, title string, ref *result, ss []series, scale float64, format string) int {
	const (
		labelW = 290
		rowH   = 14
		gap    = 10
		right  = 70
	)
	maxV := 0.0
	for _, s := range ss {
		for _, r := range s.res.Rows {
			if v := r.Metrics[s.metric].Max * scale; v > maxV && !math.IsNaN(v) {
				maxV = v
			}
		}
	}
	step := niceCeil(maxV / 5)
	maxV = math.Ceil(maxV/step) * step
	plotW := float64(width - labelW - right)
	x := func(v float64) float64 { return labelW + v/maxV*plotW }

	y := y0 + 20
	fmt.Fprintf(b, `<text x="10" y="%d" font-size="14" font-weight="bold">%s</text>`+"\n", y, html.EscapeString(title))
	y += 10
	// legend
	lx := labelW
	for _, s := range ss {
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			lx, y, s.color, lx+16, y+10, html.EscapeString(s.label))
		lx += 30 + 7*len(s.label)
	}
	y += 22
	top := y
	for _, r := range ref.Rows {
		h := rowH*len(ss) + gap
		fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelW-8, y+h/2+2, html.EscapeString(r.Name))
		for i, s := range ss {
			sr := findRow(s.res.Rows, r.Group, r.Key)
			by := y + i*rowH
			if sr == nil {
				continue
			}
			sm := sr.Metrics[s.metric]
			if math.IsNaN(sm.Median) {
				continue
			}
			fmt.Fprintf(b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n",
				labelW, by+1, x(sm.Median*scale)-labelW, rowH-2, s.color)
			if len(sm.Values) > 1 {
				cy := by + rowH/2
				fmt.Fprintf(b, `<path d="M%.1f %d H%.1f M%.1f %d V%d M%.1f %d V%d" stroke="#333" fill="none"/>`+"\n",
					x(sm.Min*scale), cy, x(sm.Max*scale), x(sm.Min*scale), cy-3, cy+3, x(sm.Max*scale), cy-3, cy+3)
			}
			fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="11">%s</text>`+"\n", x(sm.Max*scale)+4, by+rowH-3,
				fmt.Sprintf(format, sm.Median*scale))
		}
		y += h
	}
	// axis
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", labelW, top-4, labelW, y)
	for v := 0.0; v <= maxV+step/2; v += step {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/><text x="%.1f" y="%d" text-anchor="middle" fill="#555" font-size="11">%s</text>`+"\n",
			x(v), y, x(v), y+4, x(v), y+16, trimFloat(v))
	}
	return y + 20
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// busChartSeries reshapes the bus results' real-server rows into one chart
// row per K with one series per implementation.
func busChartSeries(bus *result) (*result, []series) {
	ref := &result{}
	perImpl := map[string]*result{busKeyBus: {}, busKeyConns: {}}
	for _, k := range busRealKs {
		key := fmt.Sprintf("K=%d", k)
		ref.Rows = append(ref.Rows, row{Key: key, Name: fmt.Sprintf("K = %d subscribers", k)})
		for impl, r := range perImpl {
			if src := findRow(bus.Rows, "real "+key, impl); src != nil {
				r.Rows = append(r.Rows, row{Key: key, Metrics: src.Metrics})
			}
		}
	}
	return ref, []series{
		{"pgnotify Bus (1 connection)", "#4c78a8", "rate", perImpl[busKeyBus]},
		{"pgx connection per subscriber", "#e45756", "rate", perImpl[busKeyConns]},
	}
}
