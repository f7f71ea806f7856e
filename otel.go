package lifecycle

import (
	"context"
	"fmt"
	"slices"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/stargazer/lifecycle/phases"
)

// ScopeName is the instrumentation scope of every span and metric the library
// emits: the module path.
const ScopeName = "github.com/stargazer/lifecycle"

// Span names of the two roots. A boot is one trace, a shutdown another, linked to
// the boot.
const (
	SpanBoot     = "lifecycle.boot"
	SpanShutdown = "lifecycle.shutdown"
)

// Span attribute keys. They are a contract with whoever reads the traces
// (dashboards, alerts, the e2e tests): never rename one.
const (
	// AttrMachine is the name of the machine's table ("lifecycle" for an
	// instance), on every transition span and data point and on phase spans.
	AttrMachine = attribute.Key("lifecycle.machine")
	AttrEvent   = attribute.Key("lifecycle.event")
	AttrFrom    = attribute.Key("lifecycle.from")
	AttrTo      = attribute.Key("lifecycle.to")
	// AttrPhase is the boot phase number (int) of the destination, when it has one.
	AttrPhase = attribute.Key("lifecycle.phase")
	// AttrPhaseLabel is the destination's label ("3", "S1"), when it has one.
	AttrPhaseLabel = attribute.Key("lifecycle.phase_label")
	AttrGuard      = attribute.Key("lifecycle.guard")
	// AttrState names the state a phase-work span does the work of.
	AttrState = attribute.Key("lifecycle.state")
	// AttrSkipped marks shutdown work skipped because it never started.
	AttrSkipped = attribute.Key("lifecycle.skipped")
	// AttrOutcome is the end of a boot or shutdown: running, stopped, failed,
	// interrupted.
	AttrOutcome = attribute.Key("lifecycle.outcome")
	// AttrDegraded is set on the boot root when Redis was unreachable and not required.
	AttrDegraded = attribute.Key("lifecycle.degraded")
)

// Metric names (docs/metrics.md lists them with their labels and PromQL).
const (
	// MetricTransitions counts transitions, by machine, from, to and event.
	MetricTransitions = "lifecycle.transitions"
	// MetricPhaseDuration is the time spent in a state before leaving it, by
	// machine and state, in seconds.
	MetricPhaseDuration = "lifecycle.phase.duration"
	// MetricState is 1 for the state a machine is in and 0 for its other
	// states, by machine and state.
	MetricState = "lifecycle.state"
	// MetricBootDuration is the time from the start of a boot to its end, by
	// outcome (running, failed, interrupted), in seconds.
	MetricBootDuration = "lifecycle.boot.duration"
)

// DurationBuckets are the bucket boundaries, in seconds, of the duration
// histograms: from a millisecond (a phase that does nothing) to the default
// boot timeout of five minutes. The SDK's default boundaries (0 to 10000)
// are made for milliseconds and would put every phase in one bucket.
var DurationBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

type attrKV = attribute.KeyValue

// The telemetry observers are plain observers of the public Transition:
// everything they attach is built once per table edge (Transition.Edge) and
// per state, from the table alone, so a transition builds nothing but the
// span and the data points.

// traceObserver turns each transition into a span, a child of the span in the
// context given to Fire.
type traceObserver struct {
	tracer trace.Tracer
	edges  []edgeSpan // by Transition.Edge
}

// edgeSpan is the span name of one edge and, per source state (in the edge's
// From order), the start options with every attribute. An edge has few
// sources: a scan finds one faster than a map would hash its name.
type edgeSpan struct {
	name  string
	froms []phases.State
	opts  [][]trace.SpanStartOption // opts[i] is for froms[i]
}

// newTraceObserver returns the observer that emits transition spans to tp (the
// global provider when nil), or nil when tp is the no-op provider: then there is
// nothing to build, not even a span.
func newTraceObserver(tp trace.TracerProvider, table *phases.Table) *traceObserver {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if _, off := tp.(tracenoop.TracerProvider); off {
		return nil
	}
	o := &traceObserver{tracer: tp.Tracer(ScopeName), edges: make([]edgeSpan, len(table.Transitions))}
	for i, tr := range table.Edges() {
		to, _ := table.State(tr.To)
		attrs := []attrKV{AttrMachine.String(table.Name), AttrEvent.String(string(tr.Event)), AttrTo.String(string(tr.To))}
		if to.Number > 0 {
			attrs = append(attrs, AttrPhase.Int(to.Number))
		}
		if to.Label != "" {
			attrs = append(attrs, AttrPhaseLabel.String(to.Label))
		}
		if g := tr.Guard.String(); g != "" {
			attrs = append(attrs, AttrGuard.String(g))
		}
		e := edgeSpan{name: "transition " + tr.Label(), froms: slices.Clone(tr.From), opts: make([][]trace.SpanStartOption, len(tr.From))}
		for j, from := range tr.From {
			all := append(append(make([]attrKV, 0, len(attrs)+1), attrs...), AttrFrom.String(string(from)))
			// A slice, passed on with opts...: Start's variadic parameter
			// then costs no allocation per span.
			e.opts[j] = []trace.SpanStartOption{trace.WithAttributes(all...)}
		}
		o.edges[i] = e
	}
	return o
}

func (o *traceObserver) Transitioned(ctx context.Context, t Transition) {
	e := &o.edges[t.Edge]
	var opts []trace.SpanStartOption
	for i, from := range e.froms {
		if from == t.From {
			opts = e.opts[i]
			break
		}
	}
	_, span := o.tracer.Start(ctx, e.name, opts...)
	if t.Cause != nil && span.IsRecording() {
		span.RecordError(t.Cause)
		span.SetStatus(codes.Error, t.Cause.Error())
	}
	span.End()
}

// metricsObserver records what dashboards need: transitions by from/to/event, the
// time spent in each state, and (through an observable gauge) the current state,
// each with the machine's name, so two machines' series never mix.
type metricsObserver struct {
	transitions metric.Int64Counter
	durations   metric.Float64Histogram
	reg         metric.Registration
	// Attribute sets are static per edge and source, and per state: built once,
	// because building them is most of what a metric costs.
	edges []edgeMetrics // by Transition.Edge
}

// edgeMetrics holds, per source state of one edge (in the edge's From order),
// the options of the transition count and of the time spent in the source, as
// slices passed on with opts...: then Add's and Record's variadic parameters
// cost no allocation per transition.
type edgeMetrics struct {
	froms []phases.State
	add   [][]metric.AddOption
	rec   [][]metric.RecordOption
}

// newMetricsObserver builds the observer of a machine running table, whose
// current state current returns (for the gauge).
func newMetricsObserver(mp metric.MeterProvider, table *phases.Table, current func() phases.State) (*metricsObserver, error) {
	meter := mp.Meter(ScopeName)
	machine := AttrMachine.String(table.Name)
	o := &metricsObserver{edges: make([]edgeMetrics, len(table.Transitions))}
	inState := make(map[phases.State]attribute.Set, len(table.States))
	states := make([]metric.ObserveOption, len(table.States))
	for i, s := range table.States {
		set := attribute.NewSet(machine, AttrState.String(string(s.Name)))
		inState[s.Name] = set
		states[i] = metric.WithAttributeSet(set)
	}
	for i, tr := range table.Edges() {
		e := edgeMetrics{froms: slices.Clone(tr.From), add: make([][]metric.AddOption, len(tr.From)), rec: make([][]metric.RecordOption, len(tr.From))}
		for j, from := range tr.From {
			e.add[j] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(machine,
				AttrFrom.String(string(from)), AttrTo.String(string(tr.To)), AttrEvent.String(string(tr.Event))))}
			e.rec[j] = []metric.RecordOption{metric.WithAttributeSet(inState[from])}
		}
		o.edges[i] = e
	}
	var err error
	if o.transitions, err = meter.Int64Counter(MetricTransitions,
		metric.WithDescription("State transitions, by machine, from, to and event."),
		metric.WithUnit("{transition}")); err != nil {
		return nil, fmt.Errorf("lifecycle: metrics: %w", err)
	}
	if o.durations, err = meter.Float64Histogram(MetricPhaseDuration,
		metric.WithDescription("Time spent in a state before leaving it, by machine and state."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(DurationBuckets...)); err != nil {
		return nil, fmt.Errorf("lifecycle: metrics: %w", err)
	}
	// The unit is an annotation, not "1": Prometheus would name a
	// dimensionless gauge lifecycle_state_ratio.
	gauge, err := meter.Int64ObservableGauge(MetricState,
		metric.WithDescription("1 for the state the machine is in, 0 for the others, by machine and state."),
		metric.WithUnit("{state}"))
	if err != nil {
		return nil, fmt.Errorf("lifecycle: metrics: %w", err)
	}
	names := make([]phases.State, len(table.States))
	for i, s := range table.States {
		names[i] = s.Name
	}
	o.reg, err = meter.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		cur := current()
		for i, s := range names {
			var v int64
			if s == cur {
				v = 1
			}
			obs.ObserveInt64(gauge, v, states[i])
		}
		return nil
	}, gauge)
	if err != nil {
		return nil, fmt.Errorf("lifecycle: metrics: %w", err)
	}
	return o, nil
}

func (o *metricsObserver) Transitioned(ctx context.Context, t Transition) {
	e := &o.edges[t.Edge]
	for j, from := range e.froms {
		if from == t.From {
			o.transitions.Add(ctx, 1, e.add[j]...)
			o.durations.Record(ctx, t.Duration().Seconds(), e.rec[j]...)
			return
		}
	}
}

func (o *metricsObserver) close() {
	if o != nil && o.reg != nil {
		_ = o.reg.Unregister()
	}
}
