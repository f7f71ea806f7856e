package lifecycle

import (
	"context"
	"fmt"

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
	AttrEvent = attribute.Key("lifecycle.event")
	AttrFrom  = attribute.Key("lifecycle.from")
	AttrTo    = attribute.Key("lifecycle.to")
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

type attrKV = attribute.KeyValue

// edgeSpan precomputes the span name and, per source state, the span start option
// with every attribute of one table edge, so a transition builds nothing but the
// span itself.
func edgeSpan(tr phases.Transition, to phases.StateInfo) (string, map[phases.State]trace.SpanStartOption) {
	attrs := []attrKV{AttrEvent.String(string(tr.Event)), AttrTo.String(string(tr.To))}
	if to.Number > 0 {
		attrs = append(attrs, AttrPhase.Int(to.Number))
	}
	if to.Label != "" {
		attrs = append(attrs, AttrPhaseLabel.String(to.Label))
	}
	if g := tr.Guard.String(); g != "" {
		attrs = append(attrs, AttrGuard.String(g))
	}
	opts := make(map[phases.State]trace.SpanStartOption, len(tr.From))
	for _, from := range tr.From {
		all := append(append(make([]attrKV, 0, len(attrs)+1), attrs...), AttrFrom.String(string(from)))
		opts[from] = trace.WithAttributes(all...)
	}
	return "transition " + tr.Label(), opts
}

// traceObserver turns each transition into a span, a child of the span in the
// context given to Fire.
type traceObserver struct {
	tracer trace.Tracer
	off    bool // the provider is the no-op one: skip even building a span
}

func newTraceObserver(tp trace.TracerProvider) *traceObserver {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	_, off := tp.(tracenoop.TracerProvider)
	return &traceObserver{tracer: tp.Tracer(ScopeName), off: off}
}

func (o *traceObserver) Transitioned(ctx context.Context, t Transition) {
	if o.off {
		return
	}
	_, span := o.tracer.Start(ctx, t.edge.spanName, t.edge.startOpts[t.From])
	if span.IsRecording() {
		if t.Cause != nil {
			span.RecordError(t.Cause)
			span.SetStatus(codes.Error, t.Cause.Error())
		}
	}
	span.End()
}

// startPhaseSpan starts the span of the work done in state s.
func startPhaseSpan(ctx context.Context, tracer trace.Tracer, s phases.StateInfo) (context.Context, trace.Span) {
	attrs := []attrKV{AttrState.String(string(s.Name))}
	if s.Number > 0 {
		attrs = append(attrs, AttrPhase.Int(s.Number))
	}
	if s.Label != "" {
		attrs = append(attrs, AttrPhaseLabel.String(s.Label))
	}
	return tracer.Start(ctx, "phase "+string(s.Name), trace.WithAttributes(attrs...))
}

// endSpan ends span, marking it as an error when err is not nil.
func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// metricsObserver records what dashboards need: transitions by from/to/event, the
// time spent in each state, and (through an observable gauge) the current state.
type metricsObserver struct {
	transitions metric.Int64Counter
	durations   metric.Float64Histogram
	reg         metric.Registration
	// Attribute sets are static per edge and source, and per state: built once,
	// because building them is most of what a metric costs.
	addOpts map[edgeFrom]metric.AddOption
	recOpts map[phases.State]metric.RecordOption
}

type edgeFrom struct {
	e    *edge
	from phases.State
}

func newMetricsObserver(mp metric.MeterProvider, m *Machine) (*metricsObserver, error) {
	meter := mp.Meter(ScopeName)
	o := &metricsObserver{addOpts: map[edgeFrom]metric.AddOption{}, recOpts: map[phases.State]metric.RecordOption{}}
	for _, edges := range m.edges {
		for _, e := range edges {
			for _, from := range e.From {
				o.addOpts[edgeFrom{e, from}] = metric.WithAttributeSet(attribute.NewSet(
					AttrFrom.String(string(from)), AttrTo.String(string(e.To)), AttrEvent.String(string(e.Event))))
			}
		}
	}
	for _, s := range m.table.States {
		o.recOpts[s.Name] = metric.WithAttributeSet(attribute.NewSet(AttrState.String(string(s.Name))))
	}
	var err error
	if o.transitions, err = meter.Int64Counter("lifecycle.transitions",
		metric.WithDescription("State transitions, by from, to and event."),
		metric.WithUnit("{transition}")); err != nil {
		return nil, fmt.Errorf("lifecycle: metrics: %w", err)
	}
	if o.durations, err = meter.Float64Histogram("lifecycle.phase.duration",
		metric.WithDescription("Time spent in a state before leaving it, by state."),
		metric.WithUnit("s")); err != nil {
		return nil, fmt.Errorf("lifecycle: metrics: %w", err)
	}
	gauge, err := meter.Int64ObservableGauge("lifecycle.state",
		metric.WithDescription("1 for the state the instance is in, 0 for the others."),
		metric.WithUnit("1"))
	if err != nil {
		return nil, fmt.Errorf("lifecycle: metrics: %w", err)
	}
	states := make([]metric.ObserveOption, len(m.table.States))
	for i, s := range m.table.States {
		states[i] = metric.WithAttributeSet(attribute.NewSet(AttrState.String(string(s.Name))))
	}
	o.reg, err = meter.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		cur := m.Current()
		for i, s := range m.table.States {
			var v int64
			if s.Name == cur {
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
	o.transitions.Add(ctx, 1, o.addOpts[edgeFrom{t.edge, t.From}])
	o.durations.Record(ctx, t.Duration().Seconds(), o.recOpts[t.From])
}

func (o *metricsObserver) close() {
	if o != nil && o.reg != nil {
		_ = o.reg.Unregister()
	}
}
