package service

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/phases"
)

// unwind runs the shutdown for event (stop, restart or fail, with its cause)
// in the stop's lifecycle.shutdown trace, which the driver opened when the
// instance moved to unwinding (beginUnwind, or beginDelay before a drain
// delay), and ends that trace.
func (in *Instance) unwind(event phases.Event, cause error) {
	in.mu.Lock()
	ctx, span := in.stopTrace, in.stopSpan
	in.mu.Unlock()
	in.shutdown(ctx, event, cause)
	err := in.failed()
	span.SetAttributes(lifecycle.AttrOutcome.String(string(in.m.Current())))
	endSpan(span, err)
	in.finish(err)
}

// unwindBoot runs the shutdown of a boot that failed with cause, inside the
// boot's trace in ctx: a failed boot is one trace that ends in failed.
func (in *Instance) unwindBoot(ctx context.Context, cause error) {
	in.mu.Lock()
	in.err = errors.Join(in.err, cause)
	_, _, err := in.step(reqPhaseFailed, conditions{}, nil)
	in.stopBegan = in.cfg.clock.Now()
	in.mu.Unlock()
	if err != nil {
		panic(err) // only the boot's goroutine fails it
	}
	in.shutdown(ctx, phases.Fail, cause)
	in.finish(in.failed())
}

// startShutdownSpan starts the root span of a shutdown for event, linked to
// the boot span link; a restart op's shutdown (op valid) joins the op's
// trace instead of starting one.
func (in *Instance) startShutdownSpan(parent context.Context, event phases.Event, link, op trace.SpanContext) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{trace.WithNewRoot()}
	if link.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: link}))
	}
	base := context.WithoutCancel(parent)
	if event == phases.Restart && op.IsValid() {
		// A control op and every instance's resulting transitions form one trace.
		base, opts[0] = trace.ContextWithSpanContext(base, op), trace.WithSpanKind(trace.SpanKindInternal)
	}
	ctx, span := in.tracer.Start(base, lifecycle.SpanShutdown, opts...)
	span.SetAttributes(lifecycle.AttrEvent.String(string(event)))
	return ctx, span
}

// shutdown fires event (stop, fail or restart) and does the shutdown steps in
// order, each under a "phase <state>" span; a step whose boot work never
// began is skipped. The caller's goroutine is the one unwinding.
func (in *Instance) shutdown(ctx context.Context, event phases.Event, cause error) {
	if err := in.m.FireWithCause(ctx, event, cause); err != nil {
		in.log.Error("cannot begin shutdown", "event", string(event), "state", string(in.m.Current()), "error", err)
		in.fail(err)
		return
	}
	// The drain delay, if a stop waited it out, counts inside the shutdown
	// timeout.
	stepsCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), in.stopBudget())
	defer cancel()

	steps := in.table.StatesIn(phases.GroupShutdown)
	for i, s := range steps {
		st := in.steps[s]
		info, _ := in.table.State(s)
		sctx, span := startPhaseSpan(stepsCtx, in.tracer, in.table.Name, info)
		skipped := !in.shutdownStarted(s)
		var err error
		if !skipped {
			err = in.safe(sctx, "shutdown "+string(s), func(ctx context.Context) error {
				_, err := st.work(in, ctx)
				return err
			})
		}
		span.SetAttributes(lifecycle.AttrSkipped.Bool(skipped))
		endSpan(span, err)
		switch {
		case err == nil:
		case st.failsTheStop:
			// The service's own cleanup failed: the stop was not clean.
			in.log.Error("shutdown step failed", "state", string(s), "error", err)
			in.fail(fmt.Errorf("%s: %w", s, err))
		default:
			// The health server and the registry entry go away on their own (the
			// process exits, the TTL runs out): worth a warning, not a failure.
			in.log.Warn("shutdown step failed", "state", string(s), "error", err)
		}
		ev, _ := phases.NextEvent(in.table, s)
		var why error
		if i == len(steps)-1 {
			// The last event says how the stop ended: its guard reads failing.
			why = in.failed()
		}
		if err := in.m.FireWithCause(ctx, ev, why); err != nil {
			in.log.Error("shutdown transition refused", "event", string(ev), "error", err)
		}
	}
	// Deliver the last status events, within one Redis deadline, unless the
	// writer's last attempt failed: a Redis that refuses or does not answer
	// would only hold the exit for the whole deadline.
	if mem, ok := in.link.member(); ok && mem.Stats().LastError != nil {
		in.giveUpUpdates()
	}
	flush, cancelFlush := context.WithTimeout(stepsCtx, in.cfg.redisTimeout)
	if err := in.link.close(flush); err != nil {
		in.log.Warn("status updates not delivered to redis", "redis", in.redisAddr, "error", err)
	}
	cancelFlush()
}

// giveUpUpdates closes the registry member without waiting for delivery: the
// updates still queued, and those of the transitions left, are dropped. It
// returns once a write in flight ends (within its own deadline).
func (in *Instance) giveUpUpdates() {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := in.link.close(done); err != nil {
		in.log.Warn("status updates not delivered to redis", "redis", in.redisAddr, "error", err)
	}
}

// finish ends the instance: Done is closed and Run and Shutdown return err.
func (in *Instance) finish(err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.stage == unwinding {
		if _, _, serr := in.step(reqUnwound, conditions{}, nil); serr != nil {
			panic(serr)
		}
	}
	in.result = err
	// The machine stays registered with the MeterProvider, so the state gauge
	// reports stopped or failed until the provider's last export; Close ends it.
	close(in.done)
	if err != nil {
		in.log.Error("instance failed", "state", string(in.m.Current()), "error", err)
	} else {
		in.log.Info("instance stopped", "state", string(in.m.Current()))
	}
}
