package service

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/phases"
)

// startPhaseSpan starts the span of the work done in state s of the machine
// named machine.
func startPhaseSpan(ctx context.Context, tracer trace.Tracer, machine string, s phases.StateInfo) (context.Context, trace.Span) {
	attrs := []attribute.KeyValue{lifecycle.AttrMachine.String(machine), lifecycle.AttrState.String(string(s.Name))}
	if s.Number > 0 {
		attrs = append(attrs, lifecycle.AttrPhase.Int(s.Number))
	}
	if s.Label != "" {
		attrs = append(attrs, lifecycle.AttrPhaseLabel.String(s.Label))
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

// recordBoot records a boot's duration and outcome (MetricBootDuration).
func (in *Instance) recordBoot(ctx context.Context, d time.Duration, outcome string) {
	in.bootDuration.Record(ctx, d.Seconds(), metric.WithAttributes(lifecycle.AttrMachine.String(in.table.Name), lifecycle.AttrOutcome.String(outcome)))
}
