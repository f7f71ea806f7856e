package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/phases"
)

// The driver: who carries the instance's work, and why it stops. The
// machine says where the lifecycle is (its phases state); the driver says
// which goroutine moves it, and what a request does now. Its whole state is
// one stage and one stop reason, changed only by move, under Instance.mu, as
// stageMoves and reasonMoves allow; every request goes through decide, a
// function of that state alone.

// stage is what drives the instance.
type stage uint8

const (
	created        stage = iota // New returned; nothing drives the instance
	booting                     // Boot or Run walks the boot phases
	booted                      // the boot is over and Boot returned; nobody calls Service.Run
	serving                     // Run calls Service.Run
	delayingRun                 // a stop waits out the drain delay; Run goes on calling Service.Run, and unwinds after
	delayingBooted              // a stop waits out the drain delay after Boot; a goroutine of the instance's own unwinds after
	unwinding                   // the shutdown steps run
	done                        // stopped or failed: Done is closed
)

var stageNames = [...]string{"created", "booting", "booted", "serving", "delaying (run)", "delaying (booted)", "unwinding", "done"}

func (s stage) String() string { return stageNames[s] }

// delaying reports whether a stop waits out the drain delay.
func (s stage) delaying() bool { return s == delayingRun || s == delayingBooted }

// stageMoves are the moves of the stage the driver makes.
var stageMoves = map[stage][]stage{
	created:        {booting, unwinding},
	booting:        {booted, serving, unwinding, done}, // done: the boot ended in a terminal state (ping_failed [redis_required])
	booted:         {serving, delayingBooted, unwinding},
	serving:        {delayingRun, unwinding},
	delayingRun:    {unwinding},
	delayingBooted: {unwinding},
	unwinding:      {done},
}

// reason is why the instance leaves running: nothing yet, a stop, a restart
// (a stop that ends in a new process), or a failure. The first stop or
// restart stands; a failure overrides either, and the unwind ends in failed
// (the failing guard).
type reason uint8

const (
	noStop reason = iota
	stopAsked
	restartAsked
	failure
)

var reasonNames = [...]string{"none", "stop", "restart", "failure"}

func (r reason) String() string { return reasonNames[r] }

var reasonMoves = map[reason][]reason{
	noStop:       {stopAsked, restartAsked, failure},
	stopAsked:    {failure},
	restartAsked: {failure},
}

// move changes the driver's state. Every write of stage and reason goes
// through it; a move the tables do not allow is a bug of the driver, and
// panics. The caller holds mu.
func (in *Instance) move(to stage, r reason) {
	if to != in.stage && !slices.Contains(stageMoves[in.stage], to) {
		panic(fmt.Sprintf("service: driver moved from %s to %s", in.stage, to))
	}
	if r != in.reason && !slices.Contains(reasonMoves[in.reason], r) {
		panic(fmt.Sprintf("service: stop reason changed from %s to %s", in.reason, r))
	}
	in.stage, in.reason = to, r
	// The first move away from running for good (a stop, a restart, a
	// failure, or Service.Run's own return) ends Leaving; a drain op moves
	// nothing, and leaves it alone.
	if (r != noStop || to >= unwinding) && in.leaving.Err() == nil {
		in.leave(in.leavingCause())
	}
}

// leavingCause says why the instance leaves: the cause of Leaving's
// context. The caller holds mu, and has set err before a failure.
func (in *Instance) leavingCause() error {
	switch in.reason {
	case stopAsked:
		return errors.New("lifecycle: leaving: a stop was asked for")
	case restartAsked:
		return errors.New("lifecycle: leaving: a restart was asked for")
	case failure:
		return fmt.Errorf("lifecycle: leaving: the instance failed: %w", in.err)
	}
	return errors.New("lifecycle: leaving: Service.Run returned")
}

// request is what asks the driver to move.
type request uint8

const (
	reqBoot        request = iota // Boot
	reqRun                        // Run
	reqBootOver                   // the boot is over: it walked every phase, or a stop cut it short
	reqBootEnded                  // the boot ended in a terminal state: nothing to unwind
	reqPhaseFailed                // a boot phase failed
	reqStop                       // RequestStop, a signal, the context of Boot or Run ending
	reqShutdown                   // Shutdown: a stop that also carries out an instance nobody drives
	reqRestart                    // RequestRestart, a restart op
	reqDrain                      // Drain (the machine checks the edge)
	reqUndrain                    // Undrain (the machine checks the edge)
	reqRunReturned                // Service.Run returned nil, or its context's error after a stop
	reqRunFailed                  // Service.Run returned another error
	reqDelayOver                  // the drain delay after Boot ended
	reqUnwound                    // the shutdown steps are over
)

var requestNames = [...]string{"Boot", "Run", "boot over", "boot ended", "phase failed", "stop", "Shutdown",
	"restart", "drain", "undrain", "Run returned", "Run failed", "delay over", "unwound"}

func (r request) String() string { return requestNames[r] }

// action is what the caller of decide does once the driver moved.
type action uint8

const (
	// actInterrupt cancels the work in progress: the boot phase, or
	// Service.Run. The goroutine doing it unwinds.
	actInterrupt action = 1 << iota
	// actDelay begins the drain delay: the stop's trace opens, the machine
	// goes running -> draining, and a timer ends the delay (by
	// interrupting, or with reqDelayOver after Boot).
	actDelay
	// actUnwindAsync: a goroutine of the instance's own unwinds (after the
	// delay, with actDelay).
	actUnwindAsync
	// actUnwind: the caller's goroutine unwinds now.
	actUnwind
	// actWait: the caller waits for Done (someone else drives).
	actWait
)

// conditions are what decide needs to know besides the driver's state.
type conditions struct {
	drainDelay bool        // a drain delay is set
	role       phases.Role // the role of the machine's current state
	restart    bool        // the table has a restart edge from the machine's current state
	byRun      bool        // the boot is Run's (reqBootOver): Run goes on to Service.Run
	bootRan    bool        // a boot began (reqRun)
}

// errRefused is wrapped by decide's refusals.
var errRefused = errors.New("refused")

// decide is the driver: what request req does in stage s with stop reason
// r. It returns the stage and reason to move to and what to do; an error
// (wrapping errRefused) refuses the request and changes nothing.
func decide(s stage, r reason, req request, c conditions) (stage, reason, action, error) {
	refuse := func() (stage, reason, action, error) {
		return s, r, 0, fmt.Errorf("%w: %s in stage %s (stop %s)", errRefused, req, s, r)
	}
	switch req {
	case reqBoot:
		if s == created {
			return booting, r, 0, nil
		}
	case reqRun:
		switch {
		case s == created:
			return booting, r, 0, nil // Run boots first
		case s == booted:
			return serving, r, 0, nil
		case (s == delayingBooted || s >= unwinding) && c.bootRan:
			return s, r, actWait, nil // a stop took over the instance Boot left
		}
	case reqBootOver:
		if s != booting {
			break
		}
		if r != noStop {
			// A stop as the boot ended: it interrupted nothing, and goes on
			// without a drain delay.
			return unwinding, r, actUnwind, nil
		}
		if c.byRun {
			return serving, r, 0, nil
		}
		return booted, r, 0, nil
	case reqBootEnded:
		if s == booting {
			return done, failure, 0, nil
		}
	case reqPhaseFailed:
		if s == booting {
			return unwinding, failure, actUnwind, nil
		}
	case reqStop, reqShutdown, reqRestart:
		next := r
		if req == reqRestart {
			// A restart needs an instance at work that nothing asked to stop,
			// in a state the table lets a restart leave (running, draining;
			// not pulling).
			if r != noStop || (s != booted && s != serving) || !c.restart {
				return refuse()
			}
			next = restartAsked
		} else if r == noStop {
			next = stopAsked
		}
		// Only the first stop leaves running with a delay: a second one
		// (Main's second signal calls SkipDrainDelay instead) changes
		// nothing, and an instance an operator drained is out of rotation
		// already (its role is draining).
		delay := r == noStop && c.drainDelay && c.role == phases.RoleServing
		switch s {
		case created:
			if req == reqShutdown {
				return unwinding, next, actUnwindAsync, nil
			}
			return s, next, 0, nil // the boot that follows ends at once
		case booting:
			return s, next, actInterrupt, nil
		case booted:
			if delay {
				return delayingBooted, next, actDelay | actUnwindAsync, nil
			}
			return unwinding, next, actUnwindAsync, nil
		case serving:
			if delay {
				return delayingRun, next, actDelay, nil
			}
			return s, next, actInterrupt, nil
		}
		return s, next, 0, nil // delaying, unwinding, done: underway already
	case reqDrain, reqUndrain:
		// An operator's drain is not a stop: it needs an instance at work
		// that nothing asked to stop.
		if r == noStop && (s == booted || s == serving) {
			return s, r, 0, nil
		}
	case reqRunReturned, reqRunFailed:
		if s == serving || s == delayingRun {
			if req == reqRunFailed {
				r = failure
			}
			return unwinding, r, actUnwind, nil
		}
	case reqDelayOver:
		if s == delayingBooted {
			return unwinding, r, actUnwind, nil
		}
	case reqUnwound:
		if s == unwinding {
			return done, r, 0, nil
		}
	}
	return refuse()
}

// step asks the driver to move for req, with mu held. When decide accepts,
// it calls accepted (if not nil), moves, and starts what must start under
// mu: the interruption, the drain delay's timer and trace, the unwind's
// trace. It returns the stage it moved from and what the caller does next;
// a refusal changes nothing.
func (in *Instance) step(req request, c conditions, accepted func()) (from stage, act action, err error) {
	c.drainDelay = in.cfg.drainDelay > 0
	cur := in.m.Current()
	c.role = in.table.Role(cur)
	c.restart = len(in.table.Alternatives(phases.Restart, cur)) > 0
	s, r, act, err := decide(in.stage, in.reason, req, c)
	if err != nil {
		return in.stage, 0, err
	}
	if accepted != nil {
		accepted()
	}
	from = in.stage
	in.move(s, r)
	if act&actInterrupt != 0 {
		in.cancelWork()
	}
	if act&actDelay != 0 {
		in.beginDelay()
	}
	// A failed boot unwinds in the boot's own trace (unwindBoot).
	if s == unwinding && req != reqPhaseFailed {
		in.beginUnwind(from)
	}
	return from, act, nil
}

// request is step for the requests that come from outside the driving
// goroutine (stops, restarts, drains): it then does what step left to do
// without mu.
func (in *Instance) request(req request, accepted func()) error {
	in.mu.Lock()
	_, act, err := in.step(req, conditions{}, accepted)
	event := in.stopEvent()
	in.mu.Unlock()
	if err != nil {
		return err
	}
	if act&actDelay != 0 {
		in.enterDrain(event)
	}
	if act&actUnwindAsync != 0 {
		// Owned by the instance: it returns once the shutdown is over (Done).
		go func() {
			if act&actDelay != 0 {
				<-in.interrupt.Done() // the delay is over
				in.mu.Lock()
				_, _, err := in.step(reqDelayOver, conditions{}, nil)
				in.mu.Unlock()
				if err != nil {
					panic(err) // only this goroutine ends delayingBooted
				}
			}
			in.unwind(event, nil)
		}()
	}
	return nil
}

// RequestStop asks the instance to stop and returns at once; Done is closed
// when it is over. It may be called from anywhere, any number of times (an
// observer, a signal handler, a control op). A boot phase or Run in progress
// has its context cancelled, and the goroutine in Boot or Run carries the
// stop out; after Boot returned, the instance carries it out on a goroutine
// of its own. Before Boot or Run, the stop waits for them: the boot that
// follows ends at once in stopped (or call Shutdown, which carries it out).
//
// With a drain delay (WithDrainDelay), a stop that finds the instance running
// takes it to draining at once (readiness 503) and cancels Run's context only
// when the delay is over, or when SkipDrainDelay ends it.
func (in *Instance) RequestStop() { _ = in.request(reqStop, nil) }

// RequestRestart asks for a shutdown that leaves the instance through the
// restart event instead of stop, and returns at once; with a drain delay a
// running instance waits it out in draining first, as for a stop. It is
// refused with an *lifecycle.InvalidEventError unless the instance is running
// or draining (after Boot, or in Run) and no stop was asked for. HandOver
// tells, once the instance stopped, what the next process needs.
func (in *Instance) RequestRestart() error { return in.restart(trace.SpanContext{}) }

// restart is RequestRestart; op, when valid, is the span of the control op
// that asked for it: the shutdown joins the op's trace, and the next
// process's boot is linked to it.
func (in *Instance) restart(op trace.SpanContext) error {
	if err := in.request(reqRestart, func() { in.restartSpan = op }); err != nil {
		return &lifecycle.InvalidEventError{Event: phases.Restart, State: in.m.Current()}
	}
	return nil
}

// Shutdown stops the instance and waits until it is stopped or ctx ends. It
// returns nil when the instance reached stopped, the error that failed it when
// it reached failed, and ctx.Err() when ctx ended first.
//
// From the first call on, readiness reports 503. If a boot phase or Run is in
// progress, its context is cancelled and the goroutine driving it (the caller
// of Boot or Run) carries the shutdown out once it returns; otherwise (before
// Boot, or after Boot returned with no Run) Shutdown starts a goroutine of
// the instance's own that does, which ends when the shutdown is over. The
// shutdown steps run in order: stopping_daemons (control-ops daemon and
// heartbeat cancelled and awaited), stopping_health (health server stopped),
// deregistering (registry entry removed), cleaning_up (Service.OnStop, only if
// OnStart was called, and exactly once). A step whose boot work never began
// is skipped. The steps share one deadline, the shutdown timeout (default
// 30s, the drain delay included), and no step waits on Redis longer than the
// Redis timeout (default 2s): when Redis does not answer, the entry is left to
// expire by its TTL and the instance still stops cleanly.
//
// ctx bounds only how long Shutdown waits. If ctx ends first, even if it had
// ended before the call, Shutdown returns ctx.Err() at once and the shutdown
// goes on in the background; Done tells when it is over. Shutdown is
// idempotent and safe to call from many goroutines: every call asks for the
// same one shutdown, and those that wait long enough return the same result.
func (in *Instance) Shutdown(ctx context.Context) error {
	_ = in.request(reqShutdown, nil) // a stop is never refused
	select {
	case <-in.done:
		return in.result
	default:
	}
	select {
	case <-in.done:
		return in.result
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SkipDrainDelay ends the drain delay of a stop in progress: Run's context is
// cancelled now and the shutdown steps follow. It reports whether a delay was
// in progress; it does nothing otherwise (an instance an operator drained is
// not stopping: see RequestStop and Undrain). Main calls it on a second
// signal.
func (in *Instance) SkipDrainDelay() bool {
	if !in.endDelay() {
		return false
	}
	in.log.Info("drain delay skipped: the shutdown steps begin")
	return true
}

// Drain takes a running instance out of rotation without stopping it:
// running -> draining, where readiness reports 503 while Service.Run goes on
// (the drain control op). Undrain brings it back; RequestRestart and
// RequestStop work from draining, and do not wait the drain delay again. It
// returns an *lifecycle.InvalidEventError unless the instance is running and
// no stop was asked for.
func (in *Instance) Drain(ctx context.Context) error {
	if err := in.request(reqDrain, nil); err != nil {
		return &lifecycle.InvalidEventError{Event: phases.Drain, State: in.m.Current()}
	}
	if err := in.m.Fire(ctx, phases.Drain); err != nil {
		return err
	}
	in.log.Info("drained: out of rotation until undrained")
	return nil
}

// Undrain puts an instance that Drain took out of rotation back in it:
// draining -> running (the undrain control op). It returns an
// *lifecycle.InvalidEventError unless the instance is draining and no stop
// was asked for (a stop waiting out its drain delay cannot be undone).
func (in *Instance) Undrain(ctx context.Context) error {
	if err := in.request(reqUndrain, nil); err != nil {
		return &lifecycle.InvalidEventError{Event: phases.Undrain, State: in.m.Current()}
	}
	if err := in.m.Fire(ctx, phases.Undrain); err != nil {
		return err
	}
	in.log.Info("undrained: back in rotation")
	return nil
}

// beginDelay starts the drain delay: the stop's trace opens (the unwind
// goes on in it) and a timer ends the delay. The caller holds mu and calls
// enterDrain after unlocking.
func (in *Instance) beginDelay() {
	in.stopBegan = in.cfg.clock.Now()
	in.delay = in.cfg.clock.AfterFunc(in.cfg.drainDelay, func() { in.endDelay() })
	in.stopTrace, in.stopSpan = in.startShutdownSpan(context.Background(), in.stopEvent(), in.bootSpan, in.restartSpan)
}

// enterDrain fires stop [drain_delay] (or restart [drain_delay]): running ->
// draining. When the machine left running meanwhile (a pull began), the
// delay ends at once and the stop goes on without it.
func (in *Instance) enterDrain(event phases.Event) {
	if err := in.m.FireFrom(in.stopTrace, phases.Running, event); err != nil {
		in.endDelay()
		return
	}
	in.log.Info("draining: readiness reports 503 until the drain delay is over", "event", string(event), "drain_delay", in.cfg.drainDelay)
}

// endDelay ends the drain delay: the work in progress (Service.Run) is
// cancelled, or the goroutine waiting out the delay after Boot unwinds. It
// reports whether a delay was in progress.
func (in *Instance) endDelay() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.stage.delaying() {
		return false
	}
	in.delay.Stop()
	in.cancelWork()
	return true
}

// beginUnwind opens the trace of the unwind of an instance that moved to
// unwinding from stage from: after a drain delay, the stop's trace goes on;
// any other unwind but a failed boot's (which goes on in the boot's trace)
// gets a new lifecycle.shutdown root, linked to the boot. The caller holds
// mu.
func (in *Instance) beginUnwind(from stage) {
	if from.delaying() {
		return
	}
	in.stopBegan = in.cfg.clock.Now()
	in.stopTrace, in.stopSpan = in.startShutdownSpan(context.Background(), in.stopEvent(), in.bootSpan, in.restartSpan)
}

// stopEvent is the event that takes the instance out of running for its
// stop reason: restart or stop. The caller holds mu.
func (in *Instance) stopEvent() phases.Event {
	if in.reason == restartAsked {
		return phases.Restart
	}
	return phases.Stop
}

// delayingGuard is the drain_delay guard: a stop waits out the drain delay.
// Only enterDrain fires stop or restart while it holds.
func (in *Instance) delayingGuard() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.stage.delaying()
}

// failingGuard is the failing guard: something failed the instance.
func (in *Instance) failingGuard() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.reason == failure
}

// fail records err as what failed the instance (a failure overrides a stop
// or a restart); later errors are joined to the first.
func (in *Instance) fail(err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.err = errors.Join(in.err, err)
	in.move(in.stage, failure)
}

// failed returns what failed the instance, nil if nothing did.
func (in *Instance) failed() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.reason != failure {
		return nil
	}
	return in.err
}

// shuttingDown reports whether a stop was asked for or the unwind began:
// readiness is 503 from then on.
func (in *Instance) shuttingDown() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.reason != noStop || in.stage >= unwinding
}

// Restarting reports whether a restart asked for the shutdown (and nothing
// failed since).
func (in *Instance) Restarting() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.reason == restartAsked
}

// Stopping reports whether a stop, a restart or a failure began to take the
// instance out of running.
func (in *Instance) Stopping() bool { return in.shuttingDown() }

// stopBudget is what is left of the shutdown timeout: the drain delay, if a
// stop waited it out, counts inside it.
func (in *Instance) stopBudget() time.Duration {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.cfg.shutdownTimeout - in.cfg.clock.Since(in.stopBegan)
}

// HandOver returns, once a restart op stopped the instance cleanly, what
// the process that replaces it needs (see process.Main); false otherwise.
func (in *Instance) HandOver() (HandOver, bool) {
	select {
	case <-in.done:
	default:
		return HandOver{}, false
	}
	in.mu.Lock()
	r, op := in.reason, in.restartSpan
	in.mu.Unlock()
	if r != restartAsked {
		return HandOver{}, false
	}
	h := HandOver{Trace: op}
	if in.control != nil {
		c := in.control.HandOver()
		h.Control = &c
	}
	return h, true
}
