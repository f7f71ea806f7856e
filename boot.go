package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/phases"
)

// Boot runs the nine boot phases and returns nil in running. A failed phase
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
	ok := in.switchState(booting, idle)
	in.mu.Unlock()
	if !ok {
		return ErrAlreadyStarted
	}
	if err := in.boot(ctx); err != nil {
		return err
	}
	in.mu.Lock()
	var stopped, unwinding bool
	switch {
	case in.state == draining:
		// A stop as the boot ended: it waits out the drain delay, then
		// unwinds on its own (Run, if called, waits for it).
	case in.state == stopping:
		unwinding = true // that drain is over already, and unwinding
	case in.reason != noStop:
		stopped = true
	default:
		in.switchState(booted, booting)
	}
	in.mu.Unlock()
	if stopped {
		in.unwind(ctx, phases.Stop, nil)
	}
	if stopped || unwinding {
		return ErrStopped
	}
	return nil
}

// Run boots the instance (unless Boot already did), calls Service.Run, and when
// Run returns or a stop arrives, shuts down. It returns once the instance is
// stopped (nil) or failed (the error that failed it). Cancelling ctx asks for a
// stop, like RequestStop. After Boot, when a stop took the instance over
// before Run, Run waits for the end and returns its result. Run returns
// ErrAlreadyStarted while another Boot or Run drives the instance, and when
// the instance was shut down before it booted.
func (in *Instance) Run(ctx context.Context) error {
	// Run's context is set up first, so that the driver is never running
	// without a way to cancel Service.Run (endDrain relies on it).
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	in.mu.Lock()
	from := in.state
	switch from {
	case idle:
		in.switchState(booting, idle)
	case booted:
		in.switchState(running, booted)
		in.cancel = cancel
	}
	bootRan := len(in.begun) > 0
	// Draining without Run: a stop that found Boot returned waits out the
	// drain delay and unwinds on its own.
	drainingAlone := from == draining && in.cancel == nil
	in.mu.Unlock()
	switch {
	case from == idle:
		if err := in.boot(ctx); err != nil {
			if errors.Is(err, ErrStopped) {
				return in.result
			}
			return err
		}
		in.mu.Lock()
		switch {
		case in.switchState(running, booting), in.state == draining:
			// Draining: a stop as the boot ended; Run goes on until the
			// drain delay is over.
			in.cancel = cancel
		default:
			// That drain is over already, and unwinding on its own.
			in.mu.Unlock()
			<-in.done
			return in.result
		}
		in.mu.Unlock()
	case from == booted:
	case (from == stopping || from == done || drainingAlone) && bootRan:
		<-in.done
		return in.result
	default:
		return ErrAlreadyStarted
	}
	stop := context.AfterFunc(ctx, in.RequestStop)
	defer stop()

	in.mu.Lock()
	work := in.reason == noStop || in.state == draining
	in.mu.Unlock()
	var err error
	if work {
		err = in.safe(runCtx, "Service.Run", in.svc.Run)
	}
	cancel()
	in.mu.Lock()
	reason := in.reason
	in.cancel = nil
	if in.state == draining {
		// Run returned on its own during the drain delay: the delay is over.
		in.drainTimer.Stop()
		in.state = running
	}
	in.mu.Unlock()
	switch {
	case reason == restartAsked && (err == nil || errors.Is(err, context.Canceled)):
		in.unwind(ctx, phases.Restart, nil)
	case err == nil, reason != noStop && errors.Is(err, context.Canceled):
		in.unwind(ctx, phases.Stop, nil)
	default:
		in.unwind(ctx, phases.Fail, fmt.Errorf("Service.Run: %w", err))
	}
	return in.result
}

// boot runs the boot states of the table. It returns nil in running, with the
// caller still driving. On failure or stop it has already unwound and returns
// the error.
func (in *Instance) boot(parent context.Context) error {
	stop := context.AfterFunc(parent, in.RequestStop)
	defer stop()
	in.notify.start()

	opts := []trace.SpanStartOption{trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindInternal)}
	if len(in.cfg.bootLinks) > 0 {
		opts = append(opts, trace.WithLinks(in.cfg.bootLinks...))
	}
	ctx, span := in.tracer.Start(context.WithoutCancel(parent), SpanBoot, opts...)
	span.SetAttributes(attribute.String("service.name", in.cfg.name), attribute.String("service.instance.id", in.cfg.instance))
	in.mu.Lock()
	in.bootSpan = span.SpanContext()
	in.mu.Unlock()
	in.log.Info("boot started")
	began := time.Now()
	outcome := "interrupted"
	defer func() { in.recordBoot(ctx, time.Since(began), outcome) }()

	for _, s := range in.bootStates {
		ev, err := in.runPhase(ctx, s, began)
		in.mu.Lock()
		stopped := in.reason != noStop
		in.mu.Unlock()
		var late *PhaseTimeoutError
		timedOut := errors.As(err, &late)
		if stopped && !timedOut {
			span.SetAttributes(AttrOutcome.String("interrupted"))
			span.End()
			in.unwind(parent, phases.Stop, nil)
			return ErrStopped
		}
		if ev == "" && err != nil {
			if !timedOut {
				// A time limit error names the phase itself.
				err = fmt.Errorf("phase %s: %w", s, err)
			}
			span.SetAttributes(AttrOutcome.String(string(phases.Failed)))
			outcome = string(phases.Failed)
			in.unwindIn(ctx, phases.Fail, err)
			endSpan(span, err)
			return err
		}
		if ev == "" {
			ev, _ = phases.NextEvent(in.table, s) // checkSteps made sure there is one
		}
		// err, if any, is the event's cause (a failed ping).
		if ferr := in.m.FireWithCause(ctx, ev, err); ferr != nil {
			outcome = string(phases.Failed)
			in.unwindIn(ctx, phases.Fail, ferr)
			endSpan(span, ferr)
			return ferr
		}
		if info, _ := in.table.State(in.m.Current()); info.Terminal {
			// The step's event ended the boot (ping_failed [redis_required]):
			// nothing started, nothing to unwind.
			in.fail(err)
			in.mu.Lock()
			in.switchState(stopping, booting)
			in.mu.Unlock()
			span.SetAttributes(AttrOutcome.String(string(in.m.Current())))
			outcome = string(in.m.Current())
			endSpan(span, err)
			in.finish(err)
			return err
		}
	}
	span.SetAttributes(AttrOutcome.String(string(phases.Running)), AttrDegraded.Bool(in.degraded.Load()))
	outcome = string(phases.Running)
	span.End()
	in.log.Info("boot completed", "degraded", in.degraded.Load(), "health_addr", in.HealthAddr())
	return nil
}

// recordBoot records a boot's duration and outcome (MetricBootDuration).
func (in *Instance) recordBoot(ctx context.Context, d time.Duration, outcome string) {
	if in.bootDuration != nil {
		in.bootDuration.Record(ctx, d.Seconds(), metric.WithAttributes(AttrMachine.String(in.table.Name), AttrOutcome.String(outcome)))
	}
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
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	in.mu.Lock()
	if in.reason != noStop {
		in.mu.Unlock()
		return "", context.Canceled
	}
	in.cancel = cancel
	in.begun[s] = true
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		in.cancel = nil
		in.mu.Unlock()
	}()

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
			err = &PanicError{Where: where, Value: v, Stack: debug.Stack()}
			in.log.Error("panic recovered", "where", where, "panic", v)
		}
	}()
	return fn(ctx)
}

// connect is phase 2's work: jitter, then PING; it returns the ping's
// outcome, ping_failed with its error as the event's cause.
func (in *Instance) connect(ctx context.Context) (phases.Event, error) {
	if in.cfg.redis == nil {
		return phases.PingSkipped, nil
	}
	if in.cfg.jitter > 0 {
		d := time.Duration(in.cfg.rand.Int64N(int64(in.cfg.jitter) + 1))
		in.log.Info("boot jitter", "sleep", d)
		t := in.cfg.clock.NewTimer(d)
		select {
		case <-t.Chan():
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		}
	}
	pctx, cancel := context.WithTimeout(ctx, in.cfg.redisTimeout)
	err := in.cfg.redis.Ping(pctx).Err()
	cancel()
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if err == nil {
		in.log.Info("redis connection verified", "redis", in.redisAddr)
		return phases.PingOK, in.attachMember()
	}
	err = in.redisError(err)
	if in.cfg.redisRequired {
		in.log.Error("redis connection failed: hard-fail gate triggered, redis is required", "redis", in.redisAddr, "error", err)
		// Nothing is written: the instance never reached Redis.
		in.dropHeld()
		return phases.PingFailed, fmt.Errorf("%w: %w", ErrRedisUnavailable, err)
	}
	in.log.Warn("redis connection failed: continuing degraded, redis is not required", "redis", in.redisAddr, "error", err)
	in.degraded.Store(true)
	// The writer delivers the held and later updates once Redis answers.
	if err := in.attachMember(); err != nil {
		return "", err
	}
	return phases.PingFailed, err
}

// redisError says which Redis failed, and, when it did not answer, within
// which deadline.
func (in *Instance) redisError(err error) error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("redis at %s did not answer within %s: %w", in.redisAddr, in.cfg.redisTimeout, err)
	}
	return fmt.Errorf("redis at %s: %w", in.redisAddr, err)
}

// register is phase 8's work: complete the registry entry, then (8.5) start
// the heartbeat and the control-ops daemon.
//
// With Redis required, a registration that fails or does not finish within the
// Redis timeout fails the boot. Without, it is left to the registry's writer and
// heartbeat, which register once Redis answers, and the instance goes on
// degraded; once it is degraded (the ping failed, or this registration did),
// nothing in the phase waits on Redis.
func (in *Instance) register(ctx context.Context) (phases.Event, error) {
	if err := in.advertise(); err != nil {
		return "", err
	}
	mem := in.member.Load()
	if mem == nil {
		return "", nil
	}
	e := in.entry(phases.Registering)
	if in.degraded.Load() {
		mem.RegisterAsync(e)
	} else {
		rctx, cancel := context.WithTimeout(ctx, in.cfg.redisTimeout)
		err := mem.Register(rctx, e)
		cancel()
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if err != nil {
			err = in.redisError(err)
			if in.cfg.redisRequired {
				return "", fmt.Errorf("registry: %w", err)
			}
			in.log.Warn("registration failed: continuing degraded, redis is not required; the entry is written once redis answers", "redis", in.redisAddr, "error", err)
			in.degraded.Store(true)
		}
	}
	mem.StartHeartbeat()
	if in.control == nil {
		return "", nil
	}
	// The daemon resolves its stream position at Start: bounded like any
	// Redis call, and not waited for at all once Redis is known to be silent
	// (it resolves it in the background).
	var cctx context.Context
	var cancel context.CancelFunc
	if in.degraded.Load() {
		cctx, cancel = context.WithCancel(ctx)
		cancel()
	} else {
		cctx, cancel = context.WithTimeout(ctx, in.cfg.redisTimeout)
	}
	err := in.control.Start(cctx)
	cancel()
	if err != nil {
		return "", fmt.Errorf("phase 8.5: %w", err)
	}
	return "", nil
}

// advertise decides the address the registry entry advertises, at phase 8:
// the configured one, else the Service's (Advertiser), read once now that
// OnStart has returned.
func (in *Instance) advertise() error {
	addr := in.cfg.advertiseAddr
	if adv, ok := in.svc.(Advertiser); ok && addr == "" {
		addr = adv.AdvertiseAddr()
		if addr != "" {
			if err := fleetenv.ValidateAdvertiseAddr(addr); err != nil {
				return fmt.Errorf("Advertiser.AdvertiseAddr returned %q: %w", addr, err)
			}
		}
	}
	if addr != "" {
		in.advertised.Store(&addr)
		if in.reg != nil {
			in.log.Info("advertising an address to clients in the registry", "addr", addr)
		}
	}
	return nil
}

// serveHealth is phase 9's work: the health server binds and serves.
func (in *Instance) serveHealth(ctx context.Context) (phases.Event, error) {
	if in.health == nil {
		return "", nil
	}
	return "", in.health.Start(ctx)
}
