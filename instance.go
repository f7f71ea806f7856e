package lifecycle

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/diagrams"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// Instance is one running copy of a service: the machine, its Redis registry
// entry, its health server and its control-ops daemon.
type Instance struct {
	cfg            config
	svc            Service
	table          *phases.Table
	steps          map[phases.State]step
	bootStates     []phases.State
	shutdownStates []phases.State
	m              *Machine
	tracer         trace.Tracer
	log            *slog.Logger
	reg            *registry.Registry // nil without Redis
	health         *health.Server     // nil without a health server
	control        *controlops.Daemon // nil without Redis
	notify         *notifier          // nil without systemd notifications
	bootDuration   metric.Float64Histogram
	started        time.Time
	host           string
	pid            int
	// redisAddr names the Redis in errors and logs, credentials removed.
	redisAddr string

	member   atomic.Pointer[registry.Member] // from phase 2, once Redis answered or is known silent
	degraded atomic.Bool
	// advertised is the registry entry's addr, set at phase 8 (see
	// Advertiser); nil before.
	advertised atomic.Pointer[string]

	// The driver: its state and stop reason, changed only under mu (see
	// switchState), and what the boot began, which the shutdown undoes.
	mu          sync.Mutex
	state       driverState
	reason      stopReason
	cancel      context.CancelFunc    // cancels the boot phase or the Run in progress
	begun       map[phases.State]bool // boot states whose work began
	failure     error                 // what made the instance fail; the failing guard
	bootSpan    trace.SpanContext
	restartSpan trace.SpanContext // the control op that asked for a restart
	// The drain of a stop (driver state draining): when it began, the timer
	// that ends it, and the lifecycle.shutdown span it opened, which the
	// unwind goes on in.
	drainBegan time.Time
	drainTimer clockwork.Timer
	drainSpan  trace.Span

	// Status updates of the transitions before the registry member exists
	// (see publish.go).
	heldMu      sync.Mutex
	held        []heldUpdate
	heldDropped bool

	done   chan struct{}
	result error
}

// driverState is where the driver of an instance is; the machine's state is
// where the lifecycle is.
type driverState int

const (
	idle     driverState = iota // New returned; nothing drives the instance
	booting                     // Boot or Run drives the boot phases
	booted                      // Boot returned nil: running, waiting for Run
	running                     // Run drives Service.Run
	draining                    // a stop waits out the drain delay; Service.Run goes on (if Run was called)
	stopping                    // the shutdown steps run
	done                        // stopped or failed: Done is closed
)

// stopReason is why the instance leaves running: nothing yet, a stop, or a
// restart (a stop that ends in a new process).
type stopReason int

const (
	noStop stopReason = iota
	stopAsked
	restartAsked
)

// switchState moves the driver to state to if it is in one of from, and
// reports whether it did. The caller holds mu.
func (in *Instance) switchState(to driverState, from ...driverState) bool {
	if !slices.Contains(from, in.state) {
		return false
	}
	in.state = to
	return true
}

// New builds an instance of svc: phase 1 (init) is New. It validates the options
// and builds the health server without starting it; it touches no network.
// Invalid options return a *ConfigError naming the option (errors.Is
// ErrConfig), among them the options only Main honours.
func New(svc Service, opts ...Option) (*Instance, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	if len(cfg.mainOnly) > 0 {
		return nil, &ConfigError{Name: cfg.mainOnly[0], Value: "(set)", Err: errors.New("only Main and MainContext honour this option; New does not")}
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
	if cfg.drainDelay < 0 || cfg.drainDelay >= cfg.shutdownTimeout {
		name := cfg.drainDelayName
		if name == "" {
			name = "drain delay"
		}
		return nil, &ConfigError{Name: name, Value: cfg.drainDelay.String(),
			Err: fmt.Errorf("want a duration >= 0 and shorter than the shutdown timeout (%s), which it counts inside", cfg.shutdownTimeout)}
	}
	if cfg.advertiseAddr != "" {
		if err := fleetenv.ValidateAdvertiseAddr(cfg.advertiseAddr); err != nil {
			return nil, &ConfigError{Name: cfg.advertiseName, Value: cfg.advertiseAddr, Err: err}
		}
	}
	if cfg.bootTimeout < 0 {
		return nil, &ConfigError{Name: "boot timeout", Value: cfg.bootTimeout.String(), Err: errors.New("want >= 0 (0 disables it)")}
	}
	if err := checkSteps(cfg.table, cfg.steps); err != nil {
		return nil, err
	}
	in := &Instance{
		cfg:            cfg,
		svc:            svc,
		table:          cfg.table,
		steps:          cfg.steps,
		bootStates:     cfg.table.StatesIn(phases.GroupBoot),
		shutdownStates: cfg.table.StatesIn(phases.GroupShutdown),
		pid:            os.Getpid(),
		begun:          map[phases.State]bool{},
		done:           make(chan struct{}),
	}
	for s, d := range cfg.phaseTimeouts {
		if !slices.Contains(in.bootStates, s) {
			return nil, &ConfigError{Name: "WithPhaseTimeout state", Value: string(s), Err: fmt.Errorf("budgets apply to the boot states %v", in.bootStates)}
		}
		if d <= 0 {
			return nil, &ConfigError{Name: "WithPhaseTimeout " + string(s), Value: d.String(), Err: errors.New("want > 0")}
		}
	}
	for s := range cfg.hooks {
		if !in.hookable(s) {
			var ok []phases.State
			for _, b := range in.bootStates {
				if in.hookable(b) {
					ok = append(ok, b)
				}
			}
			return nil, &ConfigError{Name: "WithHook state", Value: string(s), Err: fmt.Errorf("hooks run in %v", ok)}
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
	in.cfg = cfg
	in.tracer = cfg.tp.Tracer(ScopeName)
	var err error
	if in.bootDuration, err = cfg.mp.Meter(ScopeName).Float64Histogram(MetricBootDuration,
		metric.WithDescription("Time from the start of a boot to its end, by machine and outcome (running, failed, interrupted)."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(DurationBuckets...)); err != nil {
		return nil, fmt.Errorf("lifecycle: metrics: %w", err)
	}
	in.log = cfg.log.With("service", cfg.name, "instance", cfg.instance)
	in.started = cfg.clock.Now()
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
			health.WithAddr(cfg.healthAddr),
			health.WithClock(cfg.clock),
			health.WithLogger(in.log),
		}
		if cfg.redis != nil {
			hopts = append(hopts, health.WithRedis(cfg.redis, cfg.redisRequired))
		}
		// The live state diagram: where is this instance, on the same picture as
		// the docs. in.m is set before any request can arrive (Start is phase 9).
		hopts = append(hopts, health.WithHandler("/debug/lifecycle",
			diagrams.Handler(in.table, func() phases.State { return in.m.Current() })))
		hopts = append(hopts, in.controlHealthOptions()...)
		hopts = append(hopts, in.identityHealthOptions()...)
		hopts = append(hopts, cfg.healthOpts...)
		h, err := health.New(instanceSource{in}, hopts...)
		if err != nil {
			return nil, &ConfigError{Name: "health address", Value: cfg.healthAddr, Err: err}
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
		WithGuard(phases.GuardDrainDelay, in.drainingDelay),
		WithMachineTracerProvider(cfg.tp),
		WithMachineMeterProvider(cfg.mp),
		WithMachineClock(cfg.clock),
		WithMachineLogger(in.log),
		WithMachineObserver(ObserverFunc(in.logTransition)),
		WithMachineObserver(ObserverFunc(in.publishTransition)),
		WithMachineObserver(ObserverFunc(in.controlTransition)),
	}
	if in.notify = newNotifier(in); in.notify != nil {
		mopts = append(mopts, WithMachineObserver(in.notify))
	}
	for _, o := range cfg.observers {
		mopts = append(mopts, WithMachineObserver(o))
	}
	m, err := NewMachine(in.table, mopts...)
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

// AdvertisedAddr returns the address the instance advertises to clients in
// its registry entry: set at phase 8 from WithAdvertiseAddr
// (SG_ADVERTISE_ADDR) or the Service's Advertiser; "" before, and when it
// advertises none.
func (in *Instance) AdvertisedAddr() string {
	if p := in.advertised.Load(); p != nil {
		return *p
	}
	return ""
}

// Done is closed when the instance reached stopped or failed.
func (in *Instance) Done() <-chan struct{} { return in.done }

// Close releases the instance's metric callback (the lifecycle.state gauge),
// which otherwise reports the final state for as long as the MeterProvider
// lives. Call it after Run or Shutdown returned when the process goes on
// without the instance; Main does not need it.
func (in *Instance) Close() { in.m.Close() }

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
func (in *Instance) RequestStop() { _ = in.requestStop(stopAsked, false) }

// SkipDrainDelay ends the drain delay of a stop in progress: Run's context is
// cancelled now and the shutdown steps follow. It reports whether a delay was
// in progress; it does nothing otherwise (an instance an operator drained is
// not stopping: see RequestStop and Undrain). Main calls it on a second
// signal.
func (in *Instance) SkipDrainDelay() bool {
	if !in.endDrain() {
		return false
	}
	in.log.Info("drain delay skipped: the shutdown steps begin")
	return true
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
// 30s), and no step waits on Redis longer than the Redis timeout (default
// 2s): when Redis does not answer, the entry is left to expire by its TTL and
// the instance still stops cleanly.
//
// ctx bounds only how long Shutdown waits. If ctx ends first, even if it had
// ended before the call, Shutdown returns ctx.Err() at once and the shutdown
// goes on in the background; Done tells when it is over. Shutdown is
// idempotent and safe to call from many goroutines: every call asks for the
// same one shutdown, and those that wait long enough return the same result.
func (in *Instance) Shutdown(ctx context.Context) error {
	_ = in.requestStop(stopAsked, true) // a stop is never refused
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

// requestStop records a stop for reason (the first reason stands) and makes
// sure someone carries it out: the boot phase or Run in progress is
// cancelled, and its driver unwinds; an instance that Boot left running (or,
// with fromIdle, one that never booted) is unwound on a goroutine of the
// instance's own, which ends with the shutdown. A restart is refused unless
// the instance is running and no stop was asked for.
func (in *Instance) requestStop(reason stopReason, fromIdle bool) error {
	in.mu.Lock()
	if cur := in.m.Current(); reason == restartAsked && (in.reason != noStop || in.state != booted && in.state != running || cur != phases.Running && cur != phases.Draining) {
		in.mu.Unlock()
		return &InvalidEventError{Event: phases.Restart, State: cur}
	}
	first := in.reason == noStop
	if first {
		in.reason = reason
	}
	event := phases.Stop
	if in.reason == restartAsked {
		event = phases.Restart
	}
	var unwind, drain bool
	// A restart leaves rotation first like a stop: its process goes away
	// just the same.
	canDrain := first && in.cfg.drainDelay > 0
	switch in.state {
	case booting, running:
		// Booting with the machine in running: the boot is over, and its
		// driver is about to hand over to Run (or return from Boot).
		if canDrain && (in.state == running || in.m.Current() == phases.Running) {
			drain = in.beginDrain(in.state)
		} else if in.cancel != nil {
			in.cancel()
		}
	case booted:
		if canDrain {
			drain = in.beginDrain(booted)
		} else {
			unwind = in.switchState(stopping, booted)
		}
	case idle:
		unwind = fromIdle && in.switchState(stopping, idle)
	}
	in.mu.Unlock()
	if drain {
		in.enterDrain()
	}
	if unwind {
		// Owned by the instance: it returns once the shutdown is over (Done).
		// The context only carries values; the shutdown bounds its steps.
		go in.unwind(context.Background(), event, nil)
	}
	return nil
}

// beginDrain switches the driver from state from to draining and arms the
// timer that ends the drain delay. The caller holds mu and then calls
// enterDrain, without it.
func (in *Instance) beginDrain(from driverState) bool {
	if !in.switchState(draining, from) {
		return false
	}
	in.drainBegan = in.cfg.clock.Now()
	in.drainTimer = in.cfg.clock.AfterFunc(in.cfg.drainDelay, func() { in.endDrain() })
	// The shutdown trace begins with the drain; the unwind goes on in it.
	_, in.drainSpan = in.startShutdownSpan(context.Background(), in.stopEvent(), in.bootSpan, in.restartSpan)
	return true
}

// stopEvent is the event that takes the instance out of running for the
// stop reason recorded: restart or stop. The caller holds mu.
func (in *Instance) stopEvent() phases.Event {
	if in.reason == restartAsked {
		return phases.Restart
	}
	return phases.Stop
}

// enterDrain opens the shutdown trace and fires stop [drain_delay] (or
// restart [drain_delay]): running -> draining. When the machine is not in
// running (an operator drained it, a pull is in progress), or the drain
// already ended, the stop goes on at once, without a delay.
func (in *Instance) enterDrain() {
	in.mu.Lock()
	ctx := trace.ContextWithSpan(context.Background(), in.drainSpan)
	event := in.stopEvent()
	in.mu.Unlock()
	if err := in.m.fireTo(ctx, event, phases.Running, phases.Draining); err != nil {
		in.endDrain()
		return
	}
	in.log.Info("draining: readiness reports 503 until the drain delay is over", "event", string(event), "drain_delay", in.cfg.drainDelay)
}

// endDrain ends the drain delay: Run's context is cancelled, and its driver
// unwinds; when Boot left the instance running without Run, the instance
// unwinds on a goroutine of its own. It reports whether the driver was
// draining.
func (in *Instance) endDrain() bool {
	in.mu.Lock()
	if in.state != draining {
		in.mu.Unlock()
		return false
	}
	in.drainTimer.Stop()
	var unwind bool
	if in.cancel != nil { // Run is in progress
		in.state = running
		in.cancel()
	} else {
		in.state = stopping
		unwind = true
	}
	event := in.stopEvent()
	in.mu.Unlock()
	if unwind {
		// Owned by the instance: it returns once the shutdown is over (Done).
		go in.unwind(context.Background(), event, nil)
	}
	return true
}

// drainingDelay is the drain_delay guard: a stop is waiting out the drain
// delay. Only enterDrain fires stop while it holds.
func (in *Instance) drainingDelay() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.state == draining
}

// shuttingDown reports whether a stop was asked for or the unwind began:
// readiness is 503 from then on.
func (in *Instance) shuttingDown() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.reason != noStop || in.state >= stopping
}

func (in *Instance) failing() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.failure != nil
}

// fail records err as what failed the instance, unless something did before.
func (in *Instance) fail(err error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.failure == nil {
		in.failure = err
	}
}

// failed returns what failed the instance, nil if nothing did.
func (in *Instance) failed() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.failure
}

// instanceSource adapts an Instance to health.StateSource.
type instanceSource struct{ in *Instance }

func (s instanceSource) Snapshot() health.Snapshot {
	in := s.in
	state := in.m.Current()
	info, _ := in.table.State(state)
	return health.Snapshot{
		Service:       in.cfg.name,
		Instance:      in.cfg.instance,
		Version:       in.cfg.version,
		State:         string(state),
		Role:          info.Role,
		Doc:           info.Doc,
		Phase:         info.Label,
		Since:         in.m.Since(),
		Degraded:      in.degraded.Load(),
		RedisRequired: in.cfg.redisRequired,
		ShuttingDown:  in.shuttingDown(),
	}
}
