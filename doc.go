// Package lifecycle is an observable state machine: a phases.Table (states,
// events, named guards) run on looplab/fsm, with an OpenTelemetry span and
// metrics for every transition.
//
//	m, err := lifecycle.NewMachine(&table, lifecycle.WithGuard("retries_left", job.retriesLeft))
//	if err != nil {
//		return "", err
//	}
//	defer m.Close()
//	err = m.Fire(ctx, "fail") // running -> retrying, or -> failed, as the guard decides
//
// looplab/fsm holds the state and checks every event against its own copy of
// the table; the Machine adds what it lacks: guards that choose among
// alternatives (looplab keeps one destination per event and source), the
// time each state was entered, and observers. The table is data, so the
// diagrams (package diagrams) and the docs are drawn from what runs.
//
// Every service of the fleet runs one table, phases.Lifecycle, through
// package service (New, Instance) and package process (Main). This package
// links neither of them, nor go-redis, gRPC or an exporter: a program that
// uses only the Machine pays for looplab/fsm and the OpenTelemetry API.
//
// Spans, metrics and attributes are a contract with whoever reads them (see
// the Attr, Span and Metric constants): a transition span is named
// "transition <event> [<guard>]", is a child of the span in the context given
// to Fire, and carries lifecycle.machine (the table's name),
// lifecycle.event, lifecycle.from, lifecycle.to, lifecycle.phase and
// lifecycle.guard where they apply; a transition with a cause has status
// Error. Spans and metrics go to the TracerProvider and MeterProvider given
// as options, the global ones by default.
package lifecycle
