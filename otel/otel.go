// Package otel exports pgnotify's counters as OpenTelemetry metrics.
//
// It is a module of its own (github.com/seed-c59d106d/pgnotify/otel), so
// OpenTelemetry never enters the build of a program that uses pgnotify
// without it. Each Register function registers asynchronous instruments
// whose callback reads the Stats of one [pgnotify.Manager], [bus.Bus] or
// [durable.Stream] when a reader collects: nothing is counted twice and
// nothing runs between collections.
//
// Names follow OpenTelemetry's messaging semantic conventions where one
// fits (messaging.client.consumed.messages, with messaging.system =
// "postgresql") and are pgnotify.* otherwise. Every instrument carries the
// attribute pgnotify.source (manager, bus or durable) and the attributes
// given with [WithAttributes], so several sources can share one provider.
//
// What to alert on:
//   - pgnotify.queue.usage ≥ 0.5: the server's notification queue is filling;
//     NOTIFY fails for every session once it is full (a listener stuck in a
//     transaction, or not reading, holds it back).
//   - pgnotify.connections{pgnotify.connection.state="live"} = 0, or
//     pgnotify.bus.connected = 0, for longer than a reconnect: deaf.
//   - a rising pgnotify.connection.deaths or pgnotify.reconnect.failures.
//   - pgnotify.durable.lag growing: a durable consumer falling behind (its
//     slot keeps that much WAL on the server's disk).
package otel

import (
	"errors"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// ScopeName is the instrumentation scope of every instrument this package
// registers.
const ScopeName = "github.com/seed-c59d106d/pgnotify/otel"

// Attribute keys this package sets.
const (
	// SourceKey tells which kind of pgnotify object a measurement is of:
	// "manager", "bus" or "durable".
	SourceKey = attribute.Key("pgnotify.source")
	// CauseKey classes pgnotify.connection.deaths as Manager.Stats does
	// (a SQLSTATE, "health", "network", "not_listening", "closed", "other").
	CauseKey = attribute.Key("pgnotify.cause")
	// StateKey splits pgnotify.connections: "live", "garbage", "recovering".
	StateKey = attribute.Key("pgnotify.connection.state")
)

// Option configures a registration.
type Option func(*config)

type config struct {
	provider metric.MeterProvider
	attrs    []attribute.KeyValue
}

// WithMeterProvider sets the provider the instruments are created from.
// The default is OpenTelemetry's global provider (otel.GetMeterProvider).
func WithMeterProvider(p metric.MeterProvider) Option {
	return func(c *config) { c.provider = p }
}

// WithAttributes adds attributes to every measurement of the registration,
// for example attribute.String("pgnotify.name", "orders") to tell two
// Managers apart.
func WithAttributes(attrs ...attribute.KeyValue) Option {
	return func(c *config) { c.attrs = append(c.attrs, attrs...) }
}

var errNil = errors.New("pgnotify/otel: nil source")

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		o(&c)
	}
	if c.provider == nil {
		c.provider = otel.GetMeterProvider()
	}
	return c
}

func (c config) meter() metric.Meter {
	return c.provider.Meter(ScopeName)
}

// base is the attribute set of every measurement of one registration.
func (c config) base(source string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "postgresql"),
		SourceKey.String(source),
	}
	return append(attrs, c.attrs...)
}

// with returns base and more as one option, without changing base.
func with(base []attribute.KeyValue, more ...attribute.KeyValue) metric.MeasurementOption {
	all := make([]attribute.KeyValue, 0, len(base)+len(more))
	all = append(append(all, base...), more...)
	return metric.WithAttributes(all...)
}

// instruments builds observable instruments one at a time and keeps the
// first error, so a Register function reads as a list.
type instruments struct {
	m   metric.Meter
	all []metric.Observable
	err error
}

func (in *instruments) counter(name, unit, desc string) metric.Int64ObservableCounter {
	c, err := in.m.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
	in.keep(c, err)
	return c
}

func (in *instruments) gauge(name, unit, desc string) metric.Int64ObservableGauge {
	g, err := in.m.Int64ObservableGauge(name, metric.WithUnit(unit), metric.WithDescription(desc))
	in.keep(g, err)
	return g
}

func (in *instruments) ratio(name, desc string) metric.Float64ObservableGauge {
	g, err := in.m.Float64ObservableGauge(name, metric.WithUnit("1"), metric.WithDescription(desc))
	in.keep(g, err)
	return g
}

func (in *instruments) keep(o metric.Observable, err error) {
	if err != nil {
		in.err = errors.Join(in.err, err)
		return
	}
	in.all = append(in.all, o)
}

func (in *instruments) register(cb metric.Callback) (metric.Registration, error) {
	if in.err != nil {
		return nil, in.err
	}
	return in.m.RegisterCallback(cb, in.all...)
}

// sat converts a counter to the int64 OpenTelemetry takes, saturating.
func sat(v uint64) int64 {
	if v > 1<<63-1 {
		return 1<<63 - 1
	}
	return int64(v)
}
