package otel_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/seed-c59d106d/pgnotify/internal/testkit"
)

func requireServer(t *testing.T) { testkit.RequireServer(t) }

func testContext(t *testing.T) context.Context { return testkit.Context(t, 60*time.Second) }

// collected is one collection, by instrument name.
type collected map[string]metricdata.Aggregation

func collect(t *testing.T, r *sdkmetric.ManualReader) collected {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("collect: %v", err)
	}
	out := collected{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// value returns the int64 data point of name whose attributes include
// every one of match, and whether there is one.
func (c collected) value(name string, match ...attribute.KeyValue) (int64, bool) {
	switch d := c[name].(type) {
	case metricdata.Sum[int64]:
		return pick(d.DataPoints, match)
	case metricdata.Gauge[int64]:
		return pick(d.DataPoints, match)
	}
	return 0, false
}

func (c collected) float(name string) (float64, bool) {
	d, ok := c[name].(metricdata.Gauge[float64])
	if !ok || len(d.DataPoints) == 0 {
		return 0, false
	}
	return d.DataPoints[0].Value, true
}

func pick(points []metricdata.DataPoint[int64], match []attribute.KeyValue) (int64, bool) {
next:
	for _, p := range points {
		for _, kv := range match {
			v, ok := p.Attributes.Value(kv.Key)
			if !ok || v != kv.Value {
				continue next
			}
		}
		return p.Value, true
	}
	return 0, false
}

// eventually waits for cond, failing t after 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitUntil(t, 10*time.Second, what, cond)
}
