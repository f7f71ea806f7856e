// Package lifecycle gives every service of a fleet one boot and shutdown contract,
// and makes it observable.
//
// A service implements Service (OnStart, Run, OnStop) and calls Main. The library
// drives nine boot phases, running, and a reverse-order graceful shutdown as
// explicit states of a state machine (see the phases package for the table and
// the diagrams directory for its picture):
//
//	init -> connecting -> configuring -> instrumenting -> loading_modules ->
//	building_adapters -> starting -> registering -> serving_health -> running ->
//	stopping_daemons -> stopping_health -> deregistering -> cleaning_up -> stopped
//
// A failed Redis ping ends the boot in failed when Redis is required and continues
// degraded when it is not. A failing phase or a failing Run unwinds through the
// shutdown states and ends in failed. A stop can arrive in any phase: the phase's
// context is cancelled and the machine unwinds, skipping the steps whose work never
// started; Service.OnStop runs only if Service.OnStart was called.
//
// Every transition is an OpenTelemetry span (children of a lifecycle.boot or a
// lifecycle.shutdown root), a metric, a log line, and a status update in the Redis
// service registry. The registry entry exists from the first transition after Redis
// answered, so an operator sees an instance stuck mid-boot; the sg:events stream
// holds every transition, connect included (held in memory until Redis answered
// the ping, dropped if a required ping fails).
//
// # Time limits
//
// A fault never hangs the lifecycle. Every Redis call a transition waits for
// has a deadline, the Redis timeout (WithRedisTimeout, SG_REDIS_TIMEOUT,
// default 2s, go-redis's retries included): the ping gate, the registration,
// the control-ops daemon's start and stop, the deregistration and the last
// flush of status updates. What a Redis that stops answering means is the
// redis_required guard's to decide, at every step:
//
//   - required (the default): the ping or the registration failing or not
//     answering in time fails the boot (failed, exit code 1), with an error
//     naming Redis and its address.
//   - not required: the instance goes on degraded. Once it knows Redis is
//     silent nothing in the boot waits on it; the registry's writer and
//     heartbeat register the instance when Redis answers again, and
//     readiness never depends on Redis.
//   - shutdown: the deregistration gets one deadline; if Redis does not
//     answer, the entry is left to expire by its TTL and the instance still
//     reaches stopped (exit code 0).
//
// The whole boot is bounded by the boot timeout (WithBootTimeout,
// SG_BOOT_TIMEOUT, default 5m), and a phase can get a budget of its own
// (WithPhaseTimeout). A phase past its limit has its context cancelled and,
// if it has not returned PhaseGrace later, is abandoned: the boot fails with
// a *PhaseTimeoutError naming the phase, its budget and the time spent, and
// unwinds through the shutdown steps whose work started. The abandoned
// goroutine is the user's: the library cannot stop it.
//
// Control ops (restart, pull, a service's own; package controlops) are rejected
// until the instance has a key (SG_CONTROL_KEY, WithControlKeys) or opts in to
// unsigned ops (SG_CONTROL_INSECURE=true, WithControlInsecure); the registry
// entry's control field and /healthz say which. A restart op stops the instance
// through the shutdown states and, by default, execs the process again with the
// same instance id, handing the control channel's state over in the environment
// (see MainContext).
package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/diagrams"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// Service is what a service author implements.
type Service interface {
	// OnStart starts the service's machinery (phase 7). Its context is cancelled
	// when a stop arrives during the phase.
	OnStart(ctx context.Context) error
	// Run does the service's work until ctx is cancelled (a stop) and then
	// returns. Returning nil before that is a clean stop; returning an error is a
	// failure (exit code 1). An error that wraps context.Canceled after a stop is a
	// clean stop.
	Run(ctx context.Context) error
	// OnStop releases what OnStart started (shutdown step S4). It is called only if
	// OnStart was called, whether OnStart succeeded or not. Its context ends at
	// the shutdown timeout.
	OnStop(ctx context.Context) error
}

// Optional phase hooks a Service may implement; each runs in its phase before the
// hooks given with WithHook.
type (
	// Configurer loads configuration (phase 3, configuring).
	Configurer interface {
		Configure(ctx context.Context) error
	}
	// Instrumenter instruments the service's clients (phase 4, instrumenting).
	Instrumenter interface {
		Instrument(ctx context.Context) error
	}
	// ModuleLoader loads tools and plugins (phase 5, loading_modules).
	ModuleLoader interface {
		LoadModules(ctx context.Context) error
	}
	// AdapterBuilder builds platform adapters (phase 6, building_adapters).
	AdapterBuilder interface {
		BuildAdapters(ctx context.Context) error
	}
)

// Errors callers branch on.
var (
	// ErrRedisUnavailable: the Redis ping failed and Redis is required.
	ErrRedisUnavailable = errors.New("lifecycle: redis is required but unavailable")
	// ErrStopped: Boot returns it when a stop arrived before the boot finished.
	ErrStopped = errors.New("lifecycle: stopped before boot finished")
	// ErrAlreadyStarted: Boot or Run was called a second time.
	ErrAlreadyStarted = errors.New("lifecycle: already started")
)

// Instance is one running copy of a service: the machine, its Redis registry
// entry, its health server and its control-ops daemons.
type Instance struct {
	cfg     config
	svc     Service
	m       *Machine
	tracer  trace.Tracer
	log     *slog.Logger
	reg     *registry.Registry
	health  *health.Server
	started time.Time
	host    string
	pid     int
	// redisAddr names the Redis in errors and logs, credentials removed.
	redisAddr string

	member   atomic.Pointer[registry.Member]
	degraded atomic.Bool
	stopping atomic.Bool // a stop was requested or the unwind began

	mu          sync.Mutex
	began       bool               // Boot, Run or Shutdown was called
	bootCalled  bool               // Boot was called: Run takes over after it
	driving     bool               // a goroutine is driving the machine
	stopReq     bool               // Shutdown (or a cancelled context) asked to stop
	finished    bool               // the unwind has begun
	cancelPhase context.CancelFunc // cancels the running phase (or Run)
	failure     error              // what made the instance fail; the failing guard
	bootSpan    trace.SpanContext
	restartReq  bool              // the stop is a restart
	restartSpan trace.SpanContext // the control op that asked for the restart

	control *controlops.Daemon // nil without Redis

	// the outcome of phase 2, fired by boot under the boot root
	pingEvent phases.Event
	pingCause error

	// which work started, so the shutdown skips the rest. onStartCalled is
	// the driver's; the others are set by the phase's
	// goroutine, which a phase past its time limit may leave running, so they
	// are guarded by mu.
	onStartCalled bool
	extrasStarted []Extra
	hbStarted     bool
	healthStarted bool

	// Status updates of the transitions before the registry member exists
	// (connect, and what follows while the ping is in flight): delivered once
	// Redis answered the ping, dropped when it failed and is required.
	heldMu      sync.Mutex
	held        []heldUpdate
	heldDropped bool

	done   chan struct{}
	result error
}

// New builds an instance of svc: phase 1 (init) is New. It validates the options
// and builds the health server without starting it; it touches no network.
// Invalid options return an error matching ErrConfig.
func New(svc Service, opts ...Option) (*Instance, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	return newInstance(svc, cfg)
}

func newInstance(svc Service, cfg config) (*Instance, error) {
	if svc == nil {
		return nil, &ConfigError{Name: "service", Value: "<nil>", Err: errors.New("a Service is required")}
	}
	if err := fleetenv.ValidateService(cfg.name); err != nil {
		return nil, &ConfigError{Name: "service name", Value: cfg.name, Err: err}
	}
	if cfg.instance == "" {
		cfg.instance = generateInstanceID()
	}
	if err := fleetenv.ValidateInstance(cfg.instance); err != nil {
		return nil, &ConfigError{Name: "instance id", Value: cfg.instance, Err: err}
	}
	if cfg.jitter < 0 {
		return nil, &ConfigError{Name: "boot jitter", Value: cfg.jitter.String(), Err: errors.New("want >= 0")}
	}
	if err := fleetenv.ValidateServiceTTL(cfg.ttl); err != nil {
		return nil, &ConfigError{Name: "service TTL", Value: cfg.ttl.String(), Err: err}
	}
	if cfg.shutdownTimeout <= 0 {
		return nil, &ConfigError{Name: "shutdown timeout", Value: cfg.shutdownTimeout.String(), Err: errors.New("want > 0")}
	}
	if cfg.redisTimeout <= 0 {
		return nil, &ConfigError{Name: "redis timeout", Value: cfg.redisTimeout.String(), Err: errors.New("want > 0")}
	}
	if cfg.bootTimeout < 0 {
		return nil, &ConfigError{Name: "boot timeout", Value: cfg.bootTimeout.String(), Err: errors.New("want >= 0 (0 disables it)")}
	}
	for s, d := range cfg.phaseTimeouts {
		if !slices.Contains(phases.BootStates(), s) {
			return nil, &ConfigError{Name: "WithPhaseTimeout state", Value: string(s), Err: errors.New("budgets apply to the boot states init ... serving_health")}
		}
		if d <= 0 {
			return nil, &ConfigError{Name: "WithPhaseTimeout " + string(s), Value: d.String(), Err: errors.New("want > 0")}
		}
	}
	for s := range cfg.hooks {
		switch s {
		case phases.Configuring, phases.Instrumenting, phases.LoadingModules, phases.BuildingAdapters, phases.Starting:
		default:
			return nil, &ConfigError{Name: "WithHook state", Value: string(s), Err: errors.New("hooks run in configuring, instrumenting, loading_modules, building_adapters or starting")}
		}
	}
	if cfg.log == nil {
		cfg.log = slog.Default()
	}
	if cfg.clock == nil {
		cfg.clock = clockwork.NewRealClock()
	}
	if cfg.rand == nil {
		cfg.rand = mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64()))
	}
	if cfg.tp == nil {
		cfg.tp = otel.GetTracerProvider()
	}
	if cfg.mp == nil {
		cfg.mp = otel.GetMeterProvider()
	}
	in := &Instance{
		cfg:     cfg,
		svc:     svc,
		tracer:  cfg.tp.Tracer(ScopeName),
		log:     cfg.log.With("service", cfg.name, "instance", cfg.instance),
		started: cfg.clock.Now(),
		pid:     os.Getpid(),
		done:    make(chan struct{}),
	}
	in.host, _ = os.Hostname()
	if cfg.redis != nil {
		in.redisAddr = fleetenv.RedisAddr(cfg.redis)
		if !honoursDeadlines(cfg.redis) {
			in.log.Warn("the redis client ignores context deadlines (ContextTimeoutEnabled is false): a Redis that stops answering holds each call up to the client's read timeout instead of the redis timeout",
				"redis", in.redisAddr, "redis_timeout", cfg.redisTimeout)
		}
	}
	// The control daemon first: the health server's control:auth check shows
	// its mode.
	if err := in.setupControl(); err != nil {
		return nil, err
	}
	if !cfg.healthDisabled {
		hopts := []health.Option{
			health.WithAddr(net.JoinHostPort(cfg.healthHost, strconv.Itoa(cfg.healthPort))),
			health.WithClock(cfg.clock),
			health.WithLogger(in.log),
		}
		if cfg.redis != nil {
			hopts = append(hopts, health.WithRedis(cfg.redis, cfg.redisRequired))
		}
		// The live state diagram: where is this instance, on the same picture as
		// the docs. in.m is set before any request can arrive (Start is phase 9).
		hopts = append(hopts, health.WithHandler("/debug/lifecycle",
			diagrams.Handler(phases.Lifecycle(), func() phases.State { return in.m.Current() })))
		hopts = append(hopts, in.controlHealthOptions()...)
		hopts = append(hopts, in.identityHealthOptions()...)
		hopts = append(hopts, cfg.healthOpts...)
		h, err := health.New(instanceSource{in}, hopts...)
		if err != nil {
			return nil, &ConfigError{Name: "health address", Value: net.JoinHostPort(cfg.healthHost, strconv.Itoa(cfg.healthPort)), Err: err}
		}
		in.health = h
	}
	if cfg.redis != nil {
		in.reg = registry.New(cfg.redis, registry.WithTTL(cfg.ttl), registry.WithClock(cfg.clock), registry.WithLogger(in.log),
			registry.WithWriteTimeout(cfg.redisTimeout),
			// Retried at least every second, so an instance registers within
			// about a second of Redis answering again.
			registry.WithRetryBackoff(100*time.Millisecond, time.Second))
	}
	mopts := []MachineOption{
		WithGuard(phases.GuardRedisRequired, func() bool { return in.cfg.redisRequired }),
		WithGuard(phases.GuardFailing, in.failing),
		WithMachineTracerProvider(cfg.tp),
		WithMachineMeterProvider(cfg.mp),
		WithMachineClock(cfg.clock),
		WithMachineLogger(in.log),
		WithObserver(ObserverFunc(in.logTransition)),
		WithObserver(ObserverFunc(in.publishTransition)),
		WithObserver(ObserverFunc(in.controlTransition)),
	}
	for _, o := range cfg.observers {
		mopts = append(mopts, WithObserver(o))
	}
	m, err := NewMachine(phases.Lifecycle(), mopts...)
	if err != nil {
		return nil, err
	}
	in.m = m
	return in, nil
}

func generateInstanceID() string {
	host, err := os.Hostname()
	if err != nil || fleetenv.ValidateInstance(host) != nil {
		host = "instance"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// Name returns the service name.
func (in *Instance) Name() string { return in.cfg.name }

// ID returns the instance id.
func (in *Instance) ID() string { return in.cfg.instance }

// State returns the current state.
func (in *Instance) State() phases.State { return in.m.Current() }

// ErrDrivenEvent: Fire was given an event the lifecycle fires itself.
var ErrDrivenEvent = errors.New("lifecycle: event is driven by the lifecycle itself")

// Fire sends a control event to the instance. pull and pull_done move the machine
// (running -> pulling -> running); stop asks for a shutdown (like RequestStop) and
// restart for a shutdown that ends in a restart (like RequestRestart); both return
// at once. The boot and shutdown events are the lifecycle's own: Fire refuses them
// with an error matching ErrDrivenEvent, naming the event.
func (in *Instance) Fire(ctx context.Context, event phases.Event) error {
	switch event {
	case phases.Pull, phases.PullDone:
		return in.m.Fire(ctx, event)
	case phases.Stop:
		in.RequestStop()
		return nil
	case phases.Restart:
		return in.RequestRestart()
	}
	return fmt.Errorf("%w: %q (state %q)", ErrDrivenEvent, event, in.m.Current())
}

// RequestRestart asks for a shutdown that leaves the instance through the restart
// event (running -> stopping_daemons) instead of stop. It is refused with an
// *InvalidEventError unless the instance is running. Restarting reports it
// afterwards, so the process can replace itself.
func (in *Instance) RequestRestart() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if cur := in.m.Current(); cur != phases.Running || in.stopReq {
		return &InvalidEventError{Event: phases.Restart, State: cur}
	}
	in.restartReq = true
	in.requestStopLocked()
	return nil
}

// Restarting reports whether the shutdown was asked for by a restart.
func (in *Instance) Restarting() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.restartReq
}

// Degraded reports whether the instance booted without the Redis it does not
// require: the ping gate or the registration found Redis silent. It registers
// once Redis answers, and stays marked degraded.
func (in *Instance) Degraded() bool { return in.degraded.Load() }

// HealthAddr returns the health server's bound address once it is serving, and
// its configured address before; "" without a health server.
func (in *Instance) HealthAddr() string {
	if in.health == nil {
		return ""
	}
	return in.health.Addr()
}

// Done is closed when the instance reached stopped or failed.
func (in *Instance) Done() <-chan struct{} { return in.done }

// Close releases the instance's metric callback (the lifecycle.state gauge),
// which otherwise reports the final state for as long as the MeterProvider
// lives. Call it after Run or Shutdown returned when the process goes on
// without the instance; Main does not need it.
func (in *Instance) Close() { in.m.Close() }

func (in *Instance) failing() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.failure != nil
}

// Boot runs the nine boot phases and returns nil in running. A failed phase
// unwinds through the shutdown states and Boot returns its error once the
// instance is in failed; a stop (Shutdown, or ctx cancelled) during the boot
// cancels the phase's context, unwinds to stopped and returns ErrStopped. A
// phase past its time limit (WithBootTimeout, WithPhaseTimeout) fails the boot
// with a *PhaseTimeoutError, even if a stop arrived meanwhile. The boot is one
// trace, rooted at a lifecycle.boot span. After Boot returns nil, the
// caller owns the instance and must call Run or Shutdown.
func (in *Instance) Boot(ctx context.Context) error {
	if err := in.begin(); err != nil {
		return err
	}
	in.mu.Lock()
	in.bootCalled = true
	in.mu.Unlock()
	if err := in.boot(ctx); err != nil {
		return err
	}
	in.mu.Lock()
	if in.stopReq {
		in.mu.Unlock()
		in.unwind(ctx, phases.Stop, nil)
		return ErrStopped
	}
	in.driving = false
	in.mu.Unlock()
	return nil
}

// Run boots the instance (unless Boot already did), calls Service.Run, and when
// Run returns or a stop arrives, shuts down. It returns once the instance is
// stopped (nil) or failed (the error that failed it). Cancelling ctx asks for a
// stop, like Shutdown.
func (in *Instance) Run(ctx context.Context) error {
	in.mu.Lock()
	booted := in.bootCalled
	in.mu.Unlock()
	if booted {
		// Boot ran: take the machine back, unless a Shutdown took it meanwhile.
		in.mu.Lock()
		if in.driving || in.finished || in.m.Current() != phases.Running {
			in.mu.Unlock()
			<-in.done
			return in.result
		}
		in.driving = true
		in.mu.Unlock()
	} else {
		if err := in.begin(); err != nil {
			return err
		}
		if err := in.boot(ctx); err != nil {
			if errors.Is(err, ErrStopped) {
				return in.result
			}
			return err
		}
	}
	stop := context.AfterFunc(ctx, in.requestStop)
	defer stop()

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	in.mu.Lock()
	if in.stopReq {
		in.mu.Unlock()
		cancel()
		in.unwind(ctx, phases.Stop, nil)
		return in.result
	}
	in.cancelPhase = cancel
	in.mu.Unlock()

	err := in.safe(runCtx, "Service.Run", in.svc.Run)
	cancel()

	in.mu.Lock()
	stopped, restart := in.stopReq, in.restartReq
	in.cancelPhase = nil
	in.mu.Unlock()
	switch {
	case restart && (err == nil || errors.Is(err, context.Canceled)):
		in.unwind(ctx, phases.Restart, nil)
	case err == nil, stopped && errors.Is(err, context.Canceled):
		in.unwind(ctx, phases.Stop, nil)
	default:
		in.unwind(ctx, phases.Fail, fmt.Errorf("Service.Run: %w", err))
	}
	return in.result
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
// OnStart was called, and exactly once). A step whose work never started is
// skipped. The steps share one deadline, the shutdown timeout (default 30s),
// and no step waits on Redis longer than the Redis timeout (default 2s): when
// Redis does not answer, the entry is left to expire by its TTL and the
// instance still stops cleanly.
//
// ctx bounds only how long Shutdown waits. If ctx ends first, even if it had
// ended before the call, Shutdown returns ctx.Err() at once and the shutdown
// goes on in the background; Done tells when it is over. Shutdown is
// idempotent and safe to call from many goroutines: every call asks for the
// same one shutdown, and those that wait long enough return the same result.
func (in *Instance) Shutdown(ctx context.Context) error {
	in.mu.Lock()
	in.requestStopLocked()
	drive := !in.driving && !in.finished
	if drive {
		in.driving = true
		in.began = true
	}
	in.mu.Unlock()
	if drive {
		// Owned by the instance: it returns once the shutdown is over (Done).
		go in.unwind(context.WithoutCancel(ctx), phases.Stop, nil)
	}
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

// RequestStop asks for a stop without waiting for it; Done tells when it is over.
// The goroutine in Boot or Run carries the stop out; when none is driving the
// instance (Boot returned and Run was not called), call Shutdown instead.
func (in *Instance) RequestStop() { in.requestStop() }

func (in *Instance) requestStop() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.requestStopLocked()
}

func (in *Instance) requestStopLocked() {
	in.stopReq = true
	in.stopping.Store(true)
	if in.cancelPhase != nil {
		in.cancelPhase()
	}
}

func (in *Instance) begin() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.began {
		return ErrAlreadyStarted
	}
	in.began, in.driving = true, true
	return nil
}

// boot runs phases 1-9. It returns nil in running, with the caller still driving.
// On failure or stop it has already unwound and returns the error.
func (in *Instance) boot(parent context.Context) error {
	stop := context.AfterFunc(parent, in.requestStop)
	defer stop()

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

	for _, s := range phases.BootStates() {
		if in.m.Current() != s {
			// A phase that ended the boot (a failed ping with Redis required).
			break
		}
		err := in.runPhase(ctx, s, began)
		in.mu.Lock()
		stopped := in.stopReq
		in.mu.Unlock()
		var late *PhaseTimeoutError
		timedOut := errors.As(err, &late)
		if stopped && !timedOut {
			span.SetAttributes(AttrOutcome.String("interrupted"))
			span.End()
			in.unwind(parent, phases.Stop, nil)
			return ErrStopped
		}
		if err != nil {
			if !timedOut {
				// A time limit error names the phase itself.
				err = fmt.Errorf("phase %s: %w", s, err)
			}
			span.SetAttributes(AttrOutcome.String(string(phases.Failed)))
			in.unwindIn(ctx, phases.Fail, err)
			endSpan(span, err)
			return err
		}
		ev, cause := in.pingEvent, in.pingCause
		if s != phases.Connecting {
			// Only the ping's own event reports the ping's failure.
			ev, _ = phases.NextBootEvent(s)
			cause = nil
		}
		if err := in.m.FireWithCause(ctx, ev, cause); err != nil {
			in.unwindIn(ctx, phases.Fail, err)
			endSpan(span, err)
			return err
		}
	}
	if in.m.Current() == phases.Failed {
		// ping failed with Redis required: nothing started, nothing to unwind.
		in.mu.Lock()
		err := in.failure
		in.finished = true
		in.mu.Unlock()
		span.SetAttributes(AttrOutcome.String(string(phases.Failed)))
		endSpan(span, err)
		in.finish(err)
		return err
	}
	span.SetAttributes(AttrOutcome.String(string(phases.Running)), AttrDegraded.Bool(in.degraded.Load()))
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

// runPhase does the work of boot state s under a "phase <s>" span, with a context
// that a stop cancels and the phase's time limit ends (the boot began at began).
// The work runs on a goroutine of its own, so that a phase past its limit can be
// given up on: its context is cancelled, and if it has not returned PhaseGrace
// later it is abandoned. Panics become errors.
func (in *Instance) runPhase(parent context.Context, s phases.State, began time.Time) error {
	info, _ := phases.Lifecycle().State(s)
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	in.mu.Lock()
	if in.stopReq {
		in.mu.Unlock()
		return context.Canceled
	}
	in.cancelPhase = cancel
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		in.cancelPhase = nil
		in.mu.Unlock()
	}()
	if s == phases.Starting {
		in.onStartCalled = true
	}

	ctx, span := startPhaseSpan(ctx, in.tracer, info)
	start := time.Now()
	deadline, boot := in.phaseLimit(s, began, start)
	if !deadline.IsZero() && !start.Before(deadline) {
		// The boot timeout ran out as the previous phase ended.
		err := &PhaseTimeoutError{State: s, Boot: true, Budget: in.cfg.bootTimeout, Spent: start.Sub(began)}
		endSpan(span, err)
		return err
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
	done := make(chan error, 1) // buffered: an abandoned phase still returns into it
	go func() {
		done <- in.safe(ctx, "phase "+string(s), func(ctx context.Context) error { return in.phaseWork(ctx, s) })
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
	var err error
	select {
	case err = <-done:
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// It returned as its time ran out: past its limit all the same.
			err = late(false)
		}
	case <-expired:
		cancel()
		grace := time.NewTimer(PhaseGrace)
		select {
		case <-done:
			err = late(false)
		case <-grace.C:
			err = late(true)
		}
		grace.Stop()
	}
	endSpan(span, err)
	return err
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

func (in *Instance) phaseWork(ctx context.Context, s phases.State) error {
	switch s {
	case phases.Init:
		return nil // New did the work of phase 1
	case phases.Connecting:
		return in.connect(ctx)
	case phases.Registering:
		return in.register(ctx)
	case phases.ServingHealth:
		return in.serveHealth(ctx)
	}
	if h := in.serviceHook(s); h != nil {
		if err := h(ctx); err != nil {
			return err
		}
	}
	for _, h := range in.cfg.hooks[s] {
		if err := h(ctx); err != nil {
			return err
		}
	}
	return nil
}

// serviceHook returns the Service's own work for state s (Configurer.Configure,
// ..., Service.OnStart), or nil when it has none. It runs before WithHook's hooks.
func (in *Instance) serviceHook(s phases.State) Hook {
	switch s {
	case phases.Configuring:
		if h, ok := in.svc.(Configurer); ok {
			return h.Configure
		}
	case phases.Instrumenting:
		if h, ok := in.svc.(Instrumenter); ok {
			return h.Instrument
		}
	case phases.LoadingModules:
		if h, ok := in.svc.(ModuleLoader); ok {
			return h.LoadModules
		}
	case phases.BuildingAdapters:
		if h, ok := in.svc.(AdapterBuilder); ok {
			return h.BuildAdapters
		}
	case phases.Starting:
		return func(ctx context.Context) error {
			if err := in.svc.OnStart(ctx); err != nil {
				return fmt.Errorf("Service.OnStart: %w", err)
			}
			return nil
		}
	}
	return nil
}

// serveHealth is phase 9: the health server binds and serves.
func (in *Instance) serveHealth(ctx context.Context) error {
	if in.health == nil {
		return nil
	}
	if err := in.health.Start(ctx); err != nil {
		return err
	}
	in.mu.Lock()
	in.healthStarted = true
	in.mu.Unlock()
	return nil
}

// connect is phase 2: jitter, then PING, then the guarded ping event.
func (in *Instance) connect(ctx context.Context) error {
	in.pingEvent, in.pingCause = phases.PingSkipped, nil
	if in.cfg.redis == nil {
		return nil
	}
	if in.cfg.jitter > 0 {
		d := time.Duration(in.cfg.rand.Int64N(int64(in.cfg.jitter) + 1))
		in.log.Info("boot jitter", "sleep", d)
		t := in.cfg.clock.NewTimer(d)
		select {
		case <-t.Chan():
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	pctx, cancel := context.WithTimeout(ctx, in.cfg.redisTimeout)
	err := in.cfg.redis.Ping(pctx).Err()
	cancel()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err == nil {
		in.log.Info("redis connection verified", "redis", in.redisAddr)
		in.pingEvent = phases.PingOK
		return in.attachMember()
	}
	err = in.redisError(err)
	in.pingEvent, in.pingCause = phases.PingFailed, err
	if in.cfg.redisRequired {
		in.log.Error("redis connection failed: hard-fail gate triggered, redis is required", "redis", in.redisAddr, "error", err)
		// Nothing is written: the instance never reached Redis.
		in.dropHeld()
		in.mu.Lock()
		in.failure = fmt.Errorf("%w: %w", ErrRedisUnavailable, err)
		in.pingCause = in.failure
		in.mu.Unlock()
		return nil
	}
	in.log.Warn("redis connection failed: continuing degraded, redis is not required", "redis", in.redisAddr, "error", err)
	in.degraded.Store(true)
	// The writer delivers the held and later updates once Redis answers.
	return in.attachMember()
}

// heldUpdate is a status update waiting for the registry member.
type heldUpdate struct {
	entry registry.Entry
	ev    *registry.Event
}

// attachMember creates the registry member, hands it the updates held so far
// (the connect transition, first), and makes later transitions go to it.
func (in *Instance) attachMember() error {
	mem, err := in.reg.Member(in.entry(phases.Connecting))
	if err != nil {
		return err
	}
	in.heldMu.Lock()
	defer in.heldMu.Unlock()
	for _, h := range in.held {
		mem.Update(h.entry, h.ev)
	}
	in.held = nil
	in.member.Store(mem)
	return nil
}

// dropHeld discards the held updates, and any later one, for an instance that
// never reached Redis.
func (in *Instance) dropHeld() {
	in.heldMu.Lock()
	defer in.heldMu.Unlock()
	in.held, in.heldDropped = nil, true
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

// register is phase 8: complete the registry entry, then (8.5) start the heartbeat
// and the extras (control-ops daemon).
//
// With Redis required, a registration that fails or does not finish within the
// Redis timeout fails the boot. Without, it is left to the registry's writer and
// heartbeat, which register once Redis answers, and the instance goes on
// degraded; once it is degraded (the ping failed, or this registration did),
// nothing in the phase waits on Redis.
func (in *Instance) register(ctx context.Context) error {
	mem := in.member.Load()
	if mem == nil {
		return nil
	}
	e := in.entry(phases.Registering)
	if in.degraded.Load() {
		mem.RegisterAsync(e)
	} else {
		rctx, cancel := context.WithTimeout(ctx, in.cfg.redisTimeout)
		err := mem.Register(rctx, e)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			err = in.redisError(err)
			if in.cfg.redisRequired {
				return fmt.Errorf("registry: %w", err)
			}
			in.log.Warn("registration failed: continuing degraded, redis is not required; the entry is written once redis answers", "redis", in.redisAddr, "error", err)
			in.degraded.Store(true)
		}
	}
	mem.StartHeartbeat()
	in.mu.Lock()
	in.hbStarted = true
	in.mu.Unlock()
	for _, e := range in.cfg.extras {
		ectx, cancel := ctx, context.CancelFunc(func() {})
		if e == Extra(in.control) {
			// The daemon resolves its stream position at Start: bounded like any
			// Redis call, and not waited for at all once Redis is known to be
			// silent (it resolves it in the background).
			if in.degraded.Load() {
				ectx, cancel = context.WithCancel(ctx)
				cancel()
			} else {
				ectx, cancel = context.WithTimeout(ctx, in.cfg.redisTimeout)
			}
		}
		err := e.Start(ectx)
		cancel()
		if err != nil {
			return fmt.Errorf("phase 8.5: %w", err)
		}
		in.mu.Lock()
		in.extrasStarted = append(in.extrasStarted, e)
		in.mu.Unlock()
	}
	return nil
}

// entry is the registry entry for state s.
func (in *Instance) entry(s phases.State) registry.Entry {
	info, _ := phases.Lifecycle().State(s)
	return in.entryAt(info, in.cfg.clock.Now())
}

// entryAt is the registry entry for the state info describes, updated at at.
// While a failure unwinds the instance, the entry says why.
func (in *Instance) entryAt(info phases.StateInfo, at time.Time) registry.Entry {
	var why string
	in.mu.Lock()
	if in.failure != nil {
		why = in.failure.Error()
	}
	in.mu.Unlock()
	return registry.Entry{
		Error:      why,
		Service:    in.cfg.name,
		Instance:   in.cfg.instance,
		Status:     string(info.Name),
		Phase:      info.Label,
		Host:       in.host,
		PID:        in.pid,
		Version:    in.cfg.version,
		StartedAt:  in.started,
		UpdatedAt:  at,
		Degraded:   in.degraded.Load(),
		HealthAddr: in.HealthAddr(),
		Control:    in.controlMode(),
	}
}

// unwind runs the shutdown under its own lifecycle.shutdown trace, linked to the
// boot trace. parent gives context values only; the shutdown timeout bounds the
// steps.
func (in *Instance) unwind(parent context.Context, event phases.Event, cause error) {
	in.mu.Lock()
	link := in.bootSpan
	in.mu.Unlock()
	opts := []trace.SpanStartOption{trace.WithNewRoot()}
	if link.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: link}))
	}
	base := context.WithoutCancel(parent)
	if op := in.restartSpanContext(); event == phases.Restart && op.IsValid() {
		// A restart op's shutdown joins the op's trace (DESIGN.md, Observability).
		base, opts[0] = trace.ContextWithSpanContext(base, op), trace.WithSpanKind(trace.SpanKindInternal)
	}
	ctx, span := in.tracer.Start(base, SpanShutdown, opts...)
	span.SetAttributes(AttrEvent.String(string(event)))
	if !in.shutdown(ctx, event, cause) {
		span.End()
		return
	}
	in.mu.Lock()
	err := in.failure
	in.mu.Unlock()
	span.SetAttributes(AttrOutcome.String(string(in.m.Current())))
	endSpan(span, err)
	in.finish(err)
}

// unwindIn runs the shutdown inside the trace in ctx: a failed boot is one trace
// that ends in failed.
func (in *Instance) unwindIn(ctx context.Context, event phases.Event, cause error) {
	if !in.shutdown(ctx, event, cause) {
		return
	}
	in.mu.Lock()
	err := in.failure
	in.mu.Unlock()
	in.finish(err)
}

// shutdown fires event (stop, fail or restart) and walks the shutdown states. It
// returns false, doing nothing, when another shutdown already ran.
func (in *Instance) shutdown(ctx context.Context, event phases.Event, cause error) bool {
	in.mu.Lock()
	if in.finished {
		in.mu.Unlock()
		return false
	}
	in.finished = true
	in.stopping.Store(true)
	if cause != nil && in.failure == nil {
		in.failure = cause
	}
	in.mu.Unlock()

	if err := in.m.FireWithCause(ctx, event, cause); err != nil {
		in.log.Error("cannot begin shutdown", "event", string(event), "state", string(in.m.Current()), "error", err)
		in.mu.Lock()
		in.failure = errors.Join(in.failure, err)
		in.mu.Unlock()
		return true
	}
	stepsCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), in.cfg.shutdownTimeout)
	defer cancel()

	for _, s := range phases.ShutdownStates() {
		info, _ := phases.Lifecycle().State(s)
		sctx, span := startPhaseSpan(stepsCtx, in.tracer, info)
		skipped, err := in.shutdownStep(sctx, s)
		span.SetAttributes(AttrSkipped.Bool(skipped))
		endSpan(span, err)
		switch {
		case err == nil:
		case s == phases.StoppingDaemons || s == phases.CleaningUp:
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
		ev, _ := phases.NextShutdownEvent(s)
		var why error
		if s == phases.CleaningUp {
			in.mu.Lock()
			why = in.failure
			in.mu.Unlock()
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
	return true
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

func (in *Instance) shutdownStep(ctx context.Context, s phases.State) (skipped bool, err error) {
	in.mu.Lock()
	extras, hb, healthStarted := slices.Clone(in.extrasStarted), in.hbStarted, in.healthStarted
	in.mu.Unlock()
	err = in.safe(ctx, "shutdown "+string(s), func(ctx context.Context) error {
		switch s {
		case phases.StoppingDaemons:
			if len(extras) == 0 && !hb {
				skipped = true
				return nil
			}
			var errs []error
			for i := len(extras) - 1; i >= 0; i-- {
				ectx, cancel := ctx, context.CancelFunc(func() {})
				if extras[i] == Extra(in.control) {
					ectx, cancel = context.WithTimeout(ctx, in.cfg.redisTimeout)
				}
				errs = append(errs, extras[i].Stop(ectx))
				cancel()
			}
			if hb {
				in.member.Load().StopHeartbeat()
			}
			return errors.Join(errs...)
		case phases.StoppingHealth:
			if !healthStarted {
				skipped = true
				return nil
			}
			return in.health.Shutdown(ctx)
		case phases.Deregistering:
			mem := in.member.Load()
			if mem == nil {
				skipped = true
				return nil
			}
			dctx, cancel := context.WithTimeout(ctx, in.cfg.redisTimeout)
			defer cancel()
			if err := mem.Deregister(dctx); err != nil {
				// Redis did not answer within its deadline: give up on the status
				// updates now rather than after cleaning_up, so that the writer
				// starts no new write that the end of the shutdown would wait for.
				cancel()
				in.giveUpUpdates()
				return fmt.Errorf("%w; the entry expires by its TTL (%s)", in.redisError(err), in.cfg.ttl)
			}
			return nil
		case phases.CleaningUp:
			if !in.onStartCalled {
				skipped = true
				return nil
			}
			if err := in.svc.OnStop(ctx); err != nil {
				return fmt.Errorf("Service.OnStop: %w", err)
			}
		}
		return nil
	})
	return skipped, err
}

func (in *Instance) finish(err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	select {
	case <-in.done:
		return
	default:
	}
	in.result = err
	in.driving = false
	// The machine stays registered with the MeterProvider, so the state gauge
	// reports stopped or failed until the provider's last export; Close ends it.
	close(in.done)
	if err != nil {
		in.log.Error("instance failed", "state", string(in.m.Current()), "error", err)
	} else {
		in.log.Info("instance stopped", "state", string(in.m.Current()))
	}
}

// logTransition writes the one log line per transition.
func (in *Instance) logTransition(_ context.Context, t Transition) {
	args := []any{"from", string(t.From), "to", string(t.To), "event", string(t.Event), "phase", t.Phase.Label, "duration", t.Duration()}
	if g := t.Guard.String(); g != "" {
		args = append(args, "guard", g)
	}
	if t.Cause != nil {
		args = append(args, "error", t.Cause.Error())
		in.log.Warn("transition", args...)
		return
	}
	in.log.Info("transition", args...)
}

// publishTransition hands the new status to the registry member, which delivers
// it asynchronously: it never blocks the transition. Before the member exists
// (Redis has not answered the ping yet) the update is held in memory.
func (in *Instance) publishTransition(ctx context.Context, t Transition) {
	if in.reg == nil {
		return
	}
	ev := &registry.Event{
		Service:  in.cfg.name,
		Instance: in.cfg.instance,
		Event:    string(t.Event),
		From:     string(t.From),
		To:       string(t.To),
		Guard:    t.Guard.String(),
		Phase:    t.Phase.Label,
		Degraded: in.degraded.Load(),
		Time:     t.At,
	}
	if t.Cause != nil {
		ev.Error = t.Cause.Error()
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		ev.TraceID = sc.TraceID().String()
	}
	// The transition already carries its state's description and time.
	e := in.entryAt(t.Phase, t.At)
	in.heldMu.Lock()
	defer in.heldMu.Unlock()
	if mem := in.member.Load(); mem != nil {
		mem.Update(e, ev)
		return
	}
	if !in.heldDropped {
		in.held = append(in.held, heldUpdate{entry: e, ev: ev})
	}
}

// instanceSource adapts an Instance to health.StateSource.
type instanceSource struct{ in *Instance }

func (s instanceSource) Snapshot() health.Snapshot {
	in := s.in
	state := in.m.Current()
	info, _ := phases.Lifecycle().State(state)
	return health.Snapshot{
		Service:       in.cfg.name,
		Instance:      in.cfg.instance,
		Version:       in.cfg.version,
		State:         string(state),
		Phase:         info.Label,
		Since:         in.m.Since(),
		Degraded:      in.degraded.Load(),
		RedisRequired: in.cfg.redisRequired,
		ShuttingDown:  in.stopping.Load(),
	}
}
