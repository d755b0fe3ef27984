package main

import "context"

type drainImpl struct{ key, name string }

var drainImpls []drainImpl

func runBacklog(context.Context, config, *result) error { return nil }
func runLatency(context.Context, config, *result) error { return nil }
func runFanin(context.Context, config, *result) error   { return nil }
func runIdle(context.Context, config, *result) error    { return nil }
func runDrain(context.Context, config, *result) error   { return nil }
func writeChart(config) error                           { return nil }
