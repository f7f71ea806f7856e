package service

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/phases"
)

// Boot runs the boot phases and returns nil in running. A failed phase
// unwinds through the shutdown states and Boot returns its error once the
// instance is in failed; a stop (RequestStop, Shutdown, or ctx cancelled)
// during the boot cancels the phase's context, unwinds to stopped and returns
// ErrStopped. A phase past its time limit (WithBootTimeout, WithPhaseTimeout)
// fails the boot with a *PhaseTimeoutError, even if a stop arrived meanwhile.
// The boot is one trace, rooted at a lifecycle.boot span. After Boot returns
// nil, the caller owns the instance and must call Run or Shutdown (or
// RequestStop). Boot returns ErrAlreadyStarted unless it is the first of
// Boot and Run.
func (in *Instance) Boot(ctx context.Context) error {
	in.mu.Lock()
	_, _, err := in.step(reqBoot, conditions{}, nil)
	in.mu.Unlock()
	if err != nil {
		return ErrAlreadyStarted
	}
	return in.boot(ctx, false)
}

// Run boots the instance (unless Boot already did), calls Service.Run, and when
// Run returns or a stop arrives, shuts down. It returns once the instance is
// stopped (nil) or failed (the error that failed it). Cancelling ctx asks for a
// stop, like RequestStop. After Boot, when a stop took the instance over
// before Run, Run waits for the end and returns its result. Run returns
// ErrAlreadyStarted while another Boot or Run drives the instance, and when
// the instance was shut down before it booted.
func (in *Instance) Run(ctx context.Context) error {
	in.mu.Lock()
	from, act, err := in.step(reqRun, conditions{bootRan: in.begun[in.table.Initial]}, nil)
	in.mu.Unlock()
	switch {
	case err != nil:
		return ErrAlreadyStarted
	case act&actWait != 0:
		<-in.done
		return in.result
	case from == created:
		if err := in.boot(ctx, true); err != nil {
			return in.result
		}
	}
	stop := context.AfterFunc(ctx, in.RequestStop)
	defer stop()
	err = in.safe(in.workContext(ctx), "Service.Run", in.svc.Run)

	in.mu.Lock()
	req, event := reqRunReturned, in.stopEvent()
	if err != nil && !(in.reason != noStop && errors.Is(err, context.Canceled)) {
		req, event, err = reqRunFailed, phases.Fail, fmt.Errorf("Service.Run: %w", err)
		in.err = errors.Join(in.err, err)
	} else {
		err = nil
	}
	if in.stage == delayingRun {
		in.delay.Stop() // Service.Run returned during the delay: it is over
	}
	_, _, serr := in.step(req, conditions{}, nil)
	in.mu.Unlock()
	if serr != nil {
		panic(serr) // only Run's goroutine ends serving
	}
	in.unwind(event, err)
	return in.result
}

// workContext returns the context of work the driver may interrupt (a boot
// phase, Service.Run): parent's values, cancelled by the driver's
// interruption.
func (in *Instance) workContext(parent context.Context) context.Context {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	context.AfterFunc(in.interrupt, cancel)
	return ctx
}

// boot runs the boot states of the table. It returns nil in running, with the
// caller still driving (byRun: Run goes on to Service.Run). On failure or
// stop it has already unwound and returns the error (ErrStopped for a stop).
func (in *Instance) boot(parent context.Context, byRun bool) error {
	stop := context.AfterFunc(parent, in.RequestStop)
	defer stop()

	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindInternal)}
	if len(in.cfg.bootLinks) > 0 {
		opts = append(opts, trace.WithLinks(in.cfg.bootLinks...))
	}
	ctx, span := in.tracer.Start(context.WithoutCancel(parent), lifecycle.SpanBoot, opts...)
	span.SetAttributes(attribute.String("service.name", in.cfg.name), attribute.String("service.instance.id", in.cfg.instance))
	in.mu.Lock()
	in.bootSpan = span.SpanContext()
	in.mu.Unlock()
	in.log.Info("boot started")
	began := time.Now()
	outcome := "interrupted"
	defer func() { in.recordBoot(ctx, time.Since(began), outcome) }()

	for _, s := range in.table.StatesIn(phases.GroupBoot) {
		ev, err := in.runPhase(ctx, s, began)
		var late *PhaseTimeoutError
		timedOut := errors.As(err, &late)
		in.mu.Lock()
		asked := in.reason != noStop
		in.mu.Unlock()
		if asked && !timedOut {
			break // the stop is carried out below
		}
		if ev == "" && err != nil {
			if !timedOut {
				// A time limit error names the phase itself.
				err = fmt.Errorf("phase %s: %w", s, err)
			}
			span.SetAttributes(lifecycle.AttrOutcome.String(string(phases.Failed)))
			outcome = string(phases.Failed)
			in.unwindBoot(ctx, err)
			endSpan(span, err)
			return err
		}
		if ev == "" {
			ev, _ = phases.NextEvent(in.table, s) // checkSteps made sure there is one
		}
		// err, if any, is the event's cause (a failed ping).
		if ferr := in.m.FireWithCause(ctx, ev, err); ferr != nil {
			outcome = string(phases.Failed)
			in.unwindBoot(ctx, ferr)
			endSpan(span, ferr)
			return ferr
		}
		if in.table.Role(in.m.Current()) == phases.RoleFailed {
			// The step's event ended the boot (ping_failed [redis_required]):
			// nothing started, nothing to unwind.
			in.mu.Lock()
			in.err = err
			_, _, serr := in.step(reqBootEnded, conditions{}, nil)
			in.mu.Unlock()
			if serr != nil {
				panic(serr)
			}
			span.SetAttributes(lifecycle.AttrOutcome.String(string(in.m.Current())))
			outcome = string(in.m.Current())
			endSpan(span, err)
			in.finish(err)
			return err
		}
	}
	in.mu.Lock()
	_, act, serr := in.step(reqBootOver, conditions{byRun: byRun}, nil)
	in.mu.Unlock()
	if serr != nil {
		panic(serr) // only the boot's goroutine ends booting
	}
	if act&actUnwind != 0 {
		// A stop during the boot, or as it ended.
		span.SetAttributes(lifecycle.AttrOutcome.String("interrupted"))
		span.End()
		in.unwind(phases.Stop, nil)
		return ErrStopped
	}
	span.SetAttributes(lifecycle.AttrOutcome.String(string(phases.Running)), lifecycle.AttrDegraded.Bool(in.degraded.Load()))
	outcome = string(phases.Running)
	span.End()
	in.log.Info("boot completed", "degraded", in.degraded.Load(), "health_addr", in.HealthAddr())
	return nil
}

// PhaseTimeoutError reports a boot phase that ran past its time limit: its own
// budget (WithPhaseTimeout) or what was left of the whole boot's
// (WithBootTimeout, SG_BOOT_TIMEOUT). errors.Is(err, context.DeadlineExceeded)
// holds for it.
type PhaseTimeoutError struct {
	// State is the phase that ran past the limit.
	State phases.State
	// Budget is the limit: the phase's budget, or the boot timeout when Boot
	// is set.
	Budget time.Duration
	// Spent is the time spent in the phase (in the whole boot when Boot is
	// set) when the boot gave up on it.
	Spent time.Duration
	// Boot is set when the boot timeout ran out, not the phase's budget.
	Boot bool
	// Abandoned is set when the phase had not returned PhaseGrace after its
	// context was cancelled: the goroutine running it was left behind, and is
	// the user's code's to end.
	Abandoned bool
}

func (e *PhaseTimeoutError) Error() string {
	var msg string
	if e.Boot {
		msg = fmt.Sprintf("lifecycle: boot timeout of %s reached in phase %s (%s spent in the boot)", e.Budget, e.State, e.Spent.Round(time.Millisecond))
	} else {
		msg = fmt.Sprintf("lifecycle: phase %s ran past its budget of %s (%s spent)", e.State, e.Budget, e.Spent.Round(time.Millisecond))
	}
	if e.Abandoned {
		msg += fmt.Sprintf("; abandoned: it had not returned %s after its context was cancelled", PhaseGrace)
	}
	return msg
}

// Unwrap returns context.DeadlineExceeded.
func (e *PhaseTimeoutError) Unwrap() error { return context.DeadlineExceeded }

// phaseLimit returns when boot state s must be over, and whether that is the
// boot timeout rather than the phase's budget; zero when nothing limits it.
func (in *Instance) phaseLimit(s phases.State, began, now time.Time) (deadline time.Time, boot bool) {
	if d, ok := in.cfg.phaseTimeouts[s]; ok {
		deadline = now.Add(d)
	}
	if in.cfg.bootTimeout > 0 {
		if b := began.Add(in.cfg.bootTimeout); deadline.IsZero() || b.Before(deadline) {
			return b, true
		}
	}
	return deadline, false
}

// runPhase does the step of boot state s under a "phase <s>" span, with a
// context that a stop cancels and the phase's time limit ends (the boot began
// at began), and returns what the step returned (see step.work). The work
// runs on a goroutine of its own, so that a phase past its limit can be given
// up on: its context is cancelled, and if it has not returned PhaseGrace
// later it is abandoned. Panics become errors.
func (in *Instance) runPhase(parent context.Context, s phases.State, began time.Time) (phases.Event, error) {
	info, _ := in.table.State(s)
	in.mu.Lock()
	if in.reason != noStop {
		in.mu.Unlock()
		return "", context.Canceled
	}
	in.begun[s] = true
	in.mu.Unlock()
	ctx, cancel := context.WithCancel(in.workContext(parent))
	defer cancel()

	ctx, span := startPhaseSpan(ctx, in.tracer, in.table.Name, info)
	start := time.Now()
	deadline, boot := in.phaseLimit(s, began, start)
	if !deadline.IsZero() && !start.Before(deadline) {
		// The boot timeout ran out as the previous phase ended.
		err := &PhaseTimeoutError{State: s, Boot: true, Budget: in.cfg.bootTimeout, Spent: start.Sub(began)}
		endSpan(span, err)
		return "", err
	}
	var expired <-chan time.Time
	if !deadline.IsZero() {
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadline(ctx, deadline)
		defer cancelDeadline()
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		expired = t.C
	}
	type outcome struct {
		ev  phases.Event
		err error
	}
	done := make(chan outcome, 1) // buffered: an abandoned phase still returns into it
	go func() {
		var o outcome
		o.err = in.safe(ctx, "phase "+string(s), func(ctx context.Context) (err error) {
			o.ev, err = in.doStep(ctx, s)
			return err
		})
		done <- o
	}()
	late := func(abandoned bool) error {
		e := &PhaseTimeoutError{State: s, Boot: boot, Budget: in.cfg.phaseTimeouts[s], Spent: time.Since(start), Abandoned: abandoned}
		if boot {
			e.Budget, e.Spent = in.cfg.bootTimeout, time.Since(began)
		}
		if abandoned {
			in.log.Error("phase abandoned: it ignored its cancelled context; its goroutine is left running", "state", string(s), "budget", e.Budget, "spent", e.Spent)
		}
		return e
	}
	var o outcome
	select {
	case o = <-done:
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// It returned as its time ran out: past its limit all the same.
			o = outcome{err: late(false)}
		}
	case <-expired:
		cancel()
		grace := time.NewTimer(PhaseGrace)
		select {
		case <-done:
			o.err = late(false)
		case <-grace.C:
			o.err = late(true)
		}
		grace.Stop()
	}
	if o.ev == "" {
		endSpan(span, o.err)
	} else {
		span.End() // the error is the event's cause, not the phase's failure
	}
	return o.ev, o.err
}

// safe calls fn, turning a panic into a *PanicError.
func (in *Instance) safe(ctx context.Context, where string, fn func(context.Context) error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &lifecycle.PanicError{Where: where, Value: v, Stack: debug.Stack()}
			in.log.Error("panic recovered", "where", where, "panic", v)
		}
	}()
	return fn(ctx)
}
