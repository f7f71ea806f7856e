package service

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/phases"
)

// Instance is one running copy of a service: the machine, its Redis registry
// entry, its health server and its control-ops daemon.
type Instance struct {
	cfg          config
	svc          Service
	table        *phases.Table
	steps        map[phases.State]step
	m            *lifecycle.Machine
	tracer       trace.Tracer
	log          *slog.Logger
	health       *health.Server     // nil with WithoutHealthServer
	control      *controlops.Daemon // nil without Redis
	link         registryLink       // the registry entry and sg:events (publish.go)
	bootDuration metric.Float64Histogram
	started      time.Time
	host         string
	pid          int
	redisAddr    string // names the Redis in errors and logs, credentials removed

	degraded   atomic.Bool
	advertised atomic.Pointer[string] // the entry's addr, from phase 8 on (see Advertiser)

	// The driver (driver.go): its stage and stop reason, changed only by
	// move, and what goes with them; all under mu.
	mu     sync.Mutex
	stage  stage
	reason reason
	err    error                 // what failed the instance: set with reason failure
	begun  map[phases.State]bool // boot states whose work began: the shutdown undoes them
	// interrupt ends the work in progress, a boot phase or Service.Run,
	// whose contexts derive from it; cancelWork cancels it (stopWork).
	interrupt  context.Context
	cancelWork context.CancelFunc
	// leaving ends, with its cause, as the instance begins to leave
	// (Leaving): move calls leave.
	leaving   context.Context
	leave     context.CancelCauseFunc
	delay     clockwork.Timer // ends the drain delay, in the delaying stages
	stopBegan time.Time       // when the stop began: the shutdown timeout counts from it
	// stopTrace is the stop's lifecycle.shutdown span (stopSpan) in its
	// context, opened as the stop began: with the drain delay, or as the
	// instance moved to unwinding.
	stopTrace context.Context
	stopSpan  trace.Span
	bootSpan  trace.SpanContext
	// restartSpan is the span of the restart op that asked for the
	// shutdown, if one did.
	restartSpan trace.SpanContext

	done   chan struct{}
	result error
}

// New builds an instance of svc: phase 1 (init) is New. It validates the options
// and builds the health server without starting it; it touches no network.
// Invalid options return a *ConfigError naming the option (errors.Is
// ErrConfig).
func New(svc Service, opts ...Option) (*Instance, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	if err := cfg.validate(svc); err != nil {
		return nil, err
	}
	in := &Instance{
		cfg:   cfg,
		svc:   svc,
		table: cfg.table,
		steps: cfg.steps,
		pid:   os.Getpid(),
		begun: map[phases.State]bool{},
		done:  make(chan struct{}),
	}
	in.interrupt, in.cancelWork = context.WithCancel(context.Background())
	in.leaving, in.leave = context.WithCancelCause(context.Background())
	boot := in.table.StatesIn(phases.GroupBoot)
	for s, d := range cfg.phaseTimeouts {
		if !slices.Contains(boot, s) {
			return nil, &ConfigError{Name: "WithPhaseTimeout state", Value: string(s), Err: fmt.Errorf("budgets apply to the boot states %v", boot)}
		}
		if d <= 0 {
			return nil, &ConfigError{Name: "WithPhaseTimeout " + string(s), Value: d.String(), Err: errors.New("want > 0")}
		}
	}
	for s := range cfg.hooks {
		if !in.hookable(s) {
			var ok []phases.State
			for _, b := range boot {
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
		cfg.rand = rand.Float64
	}
	if cfg.tp == nil {
		cfg.tp = otel.GetTracerProvider()
	}
	if cfg.mp == nil {
		cfg.mp = otel.GetMeterProvider()
	}
	in.cfg = cfg
	in.tracer = cfg.tp.Tracer(lifecycle.ScopeName)
	var err error
	if in.bootDuration, err = cfg.mp.Meter(lifecycle.ScopeName).Float64Histogram(lifecycle.MetricBootDuration,
		metric.WithDescription("Time from the start of a boot to its end, by machine and outcome (running, failed, interrupted)."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(lifecycle.DurationBuckets...)); err != nil {
		return nil, fmt.Errorf("service: metrics: %w", err)
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
	if err := in.setupHealth(); err != nil {
		return nil, err
	}
	in.link.setup(in)
	mopts := []lifecycle.MachineOption{
		lifecycle.WithGuard(phases.GuardRedisRequired, func() bool { return in.cfg.redisRequired }),
		lifecycle.WithGuard(phases.GuardFailing, in.failingGuard),
		lifecycle.WithGuard(phases.GuardDrainDelay, in.delayingGuard),
		lifecycle.WithMachineTracerProvider(cfg.tp),
		lifecycle.WithMachineMeterProvider(cfg.mp),
		lifecycle.WithMachineClock(cfg.clock),
		lifecycle.WithMachineLogger(in.log),
		lifecycle.WithMachineObserver(lifecycle.ObserverFunc(in.logTransition)),
		lifecycle.WithMachineObserver(lifecycle.ObserverFunc(in.publishTransition)),
		lifecycle.WithMachineObserver(lifecycle.ObserverFunc(in.controlTransition)),
	}
	for _, o := range cfg.observers {
		mopts = append(mopts, lifecycle.WithMachineObserver(o))
	}
	m, err := lifecycle.NewMachine(in.table, mopts...)
	if err != nil {
		return nil, err
	}
	in.m = m
	if b, ok := svc.(Binder); ok {
		b.Bind(in)
	}
	return in, nil
}

func generateInstanceID() string {
	host, err := os.Hostname()
	if err != nil || fleetenv.ValidateInstance(host) != nil {
		host = "instance"
	}
	var b [4]byte
	_, _ = crand.Read(b[:])
	return host + "-" + hex.EncodeToString(b[:])
}

// Name returns the service name.
func (in *Instance) Name() string { return in.cfg.name }

// ID returns the instance id.
func (in *Instance) ID() string { return in.cfg.instance }

// Version returns the version given with WithVersion.
func (in *Instance) Version() string { return in.cfg.version }

// State returns the current state.
func (in *Instance) State() phases.State { return in.m.Current() }

// Logger returns the instance's logger: the one given with WithLogger
// (under process.Main, Main's own unless a WithLogger is among its options),
// with the service and instance attributes added. The instance logs its
// transitions and its own lines through it, and so does Main once New has
// returned (its signals, go-redis's lines, the exit): a service that logs
// through it (from Bind on) writes lines a reader can tell apart by
// instance, and must not add service or instance again.
func (in *Instance) Logger() *slog.Logger { return in.log }

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

// Alive returns nil when /livez would answer 200, and otherwise why not: the
// instance failed, or a boot phase or a shutdown step has lasted past the
// health server's limit (wedged). Without a health server only failed counts.
func (in *Instance) Alive() error {
	if in.health != nil {
		return in.health.Alive()
	}
	if s := in.m.Current(); in.table.Role(s) == phases.RoleFailed {
		return fmt.Errorf("state %q", s)
	}
	return nil
}

// Done is closed when the instance reached stopped or failed.
func (in *Instance) Done() <-chan struct{} { return in.done }

// Close releases the instance's metric callback (the lifecycle.state gauge),
// which otherwise reports the final state for as long as the MeterProvider
// lives. Call it after Run or Shutdown returned when the process goes on
// without the instance; Main does not need it.
func (in *Instance) Close() { in.m.Close() }
