package lifecycle

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/phases"
)

// unwind runs the shutdown under its own lifecycle.shutdown trace, linked to the
// boot trace; a restart op's shutdown joins the op's trace instead. parent
// gives context values only; the shutdown timeout bounds the steps.
func (in *Instance) unwind(parent context.Context, event phases.Event, cause error) {
	in.mu.Lock()
	link, op, span := in.bootSpan, in.restartSpan, in.drainSpan
	in.drainSpan = nil
	in.mu.Unlock()
	var ctx context.Context
	if span != nil {
		// A stop's drain opened the shutdown trace.
		ctx = trace.ContextWithSpan(context.WithoutCancel(parent), span)
	} else {
		ctx, span = in.startShutdownSpan(parent, event, link, op)
	}
	in.shutdown(ctx, event, cause)
	err := in.failed()
	span.SetAttributes(AttrOutcome.String(string(in.m.Current())))
	endSpan(span, err)
	in.finish(err)
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
	ctx, span := in.tracer.Start(base, SpanShutdown, opts...)
	span.SetAttributes(AttrEvent.String(string(event)))
	return ctx, span
}

// unwindIn runs the shutdown inside the trace in ctx: a failed boot is one trace
// that ends in failed.
func (in *Instance) unwindIn(ctx context.Context, event phases.Event, cause error) {
	in.shutdown(ctx, event, cause)
	in.finish(in.failed())
}

// shutdown fires event (stop, fail or restart) and does the shutdown steps in
// order, each under a "phase <state>" span; a step whose boot work never
// began is skipped. The caller drives the instance: it is the one unwinding.
func (in *Instance) shutdown(ctx context.Context, event phases.Event, cause error) {
	in.mu.Lock()
	in.state = stopping
	if cause != nil && in.failure == nil {
		in.failure = cause
	}
	// The drain delay, if a stop waited it out, counts inside the shutdown
	// timeout.
	budget := in.cfg.shutdownTimeout
	if !in.drainBegan.IsZero() {
		budget -= in.cfg.clock.Since(in.drainBegan)
	}
	in.mu.Unlock()

	if err := in.m.FireWithCause(ctx, event, cause); err != nil {
		in.log.Error("cannot begin shutdown", "event", string(event), "state", string(in.m.Current()), "error", err)
		in.mu.Lock()
		in.failure = errors.Join(in.failure, err)
		in.mu.Unlock()
		return
	}
	stepsCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), budget)
	defer cancel()

	for i, s := range in.shutdownStates {
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
		span.SetAttributes(AttrSkipped.Bool(skipped))
		endSpan(span, err)
		switch {
		case err == nil:
		case st.failsTheStop:
			// The service's own cleanup failed: the stop was not clean.
			in.log.Error("shutdown step failed", "state", string(s), "error", err)
			in.mu.Lock()
			in.failure = errors.Join(in.failure, fmt.Errorf("%s: %w", s, err))
			in.mu.Unlock()
		default:
			// The health server and the registry entry go away on their own (the
			// process exits, the TTL runs out): worth a warning, not a failure.
			in.log.Warn("shutdown step failed", "state", string(s), "error", err)
		}
		ev, _ := phases.NextEvent(in.table, s)
		var why error
		if i == len(in.shutdownStates)-1 {
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
	if mem := in.member.Load(); mem != nil && mem.Stats().LastError != nil {
		in.giveUpUpdates()
	}
	if mem := in.member.Swap(nil); mem != nil {
		flush, cancel := context.WithTimeout(stepsCtx, in.cfg.redisTimeout)
		if err := mem.Close(flush); err != nil {
			in.log.Warn("status updates not delivered to redis", "redis", in.redisAddr, "error", err)
		}
		cancel()
	}
}

// giveUpUpdates closes the registry member without waiting for delivery: the
// updates still queued, and those of the transitions left, are dropped. Close
// returns once a write in flight ends (within its own deadline).
func (in *Instance) giveUpUpdates() {
	mem := in.member.Swap(nil)
	if mem == nil {
		return
	}
	in.dropHeld()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if err := mem.Close(done); err != nil {
		in.log.Warn("status updates not delivered to redis", "redis", in.redisAddr, "error", err)
	}
}

// stopDaemons is step S1's work: the control-ops daemon and the heartbeat
// are cancelled and awaited.
func (in *Instance) stopDaemons(ctx context.Context) (phases.Event, error) {
	var err error
	if in.control != nil {
		cctx, cancel := context.WithTimeout(ctx, in.cfg.redisTimeout)
		err = in.control.Stop(cctx)
		cancel()
	}
	if mem := in.member.Load(); mem != nil {
		mem.StopHeartbeat()
	}
	return "", err
}

// stopHealth is step S2's work: the health server stops.
func (in *Instance) stopHealth(ctx context.Context) (phases.Event, error) {
	return "", in.health.Shutdown(ctx)
}

// deregister is step S3's work: the registry entry is removed, within one
// Redis deadline.
func (in *Instance) deregister(ctx context.Context) (phases.Event, error) {
	mem := in.member.Load()
	if mem == nil {
		return "", nil
	}
	dctx, cancel := context.WithTimeout(ctx, in.cfg.redisTimeout)
	defer cancel()
	if err := mem.Deregister(dctx); err != nil {
		// Redis did not answer within its deadline: give up on the status
		// updates now rather than after cleaning_up, so that the writer
		// starts no new write that the end of the shutdown would wait for.
		cancel()
		in.giveUpUpdates()
		return "", fmt.Errorf("%w; the entry expires by its TTL (%s)", in.redisError(err), in.cfg.ttl)
	}
	return "", nil
}

// cleanUp is step S4's work: Service.OnStop.
func (in *Instance) cleanUp(ctx context.Context) (phases.Event, error) {
	if err := in.svc.OnStop(ctx); err != nil {
		return "", fmt.Errorf("Service.OnStop: %w", err)
	}
	return "", nil
}

// finish ends the instance: Done is closed and Run and Shutdown return err.
func (in *Instance) finish(err error) {
	// The last STATUS= goes out before Done: a process may exit right after.
	in.notify.close()
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.switchState(done, stopping) {
		return
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
