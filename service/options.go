package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/phases"
)

// Defaults of the options and of the environment variables Main reads.
const (
	DefaultServiceName     = "demo"
	DefaultBootJitter      = 2 * time.Second
	DefaultServiceTTL      = fleetenv.DefaultServiceTTL
	DefaultHealthPort      = 9090
	DefaultShutdownTimeout = 30 * time.Second
	DefaultRedisTimeout    = 2 * time.Second
	DefaultBootTimeout     = 5 * time.Minute
)

// PhaseGrace is how long a boot phase that ran past its time limit has, once
// its context is cancelled, to return before the boot gives up on it (see
// WithPhaseTimeout).
const PhaseGrace = time.Second

// Option configures New (and process.Main, which passes its options on to
// New after its defaults and before the environment's settings).
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// Hook is the work of one boot phase. It gets the phase's context, which is
// cancelled when a stop arrives during the phase.
type Hook func(ctx context.Context) error

type config struct {
	name            string
	instance        string
	version         string
	redis           redis.UniversalClient
	redisRequired   bool
	jitter          time.Duration
	ttl             time.Duration
	healthAddr      string
	healthDisabled  bool
	shutdownTimeout time.Duration
	redisTimeout    time.Duration
	bootTimeout     time.Duration
	phaseTimeouts   map[phases.State]time.Duration
	tp              trace.TracerProvider
	mp              metric.MeterProvider
	log             *slog.Logger
	clock           clockwork.Clock
	rand            func() float64 // the boot jitter's source; tests set it
	hooks           map[phases.State][]Hook
	observers       []lifecycle.Observer
	bootLinks       []trace.Link
	healthOpts      []health.Option
	table           *phases.Table // the lifecycle table and its step table
	steps           map[phases.State]step
	controlKeys     [][]byte             // control.go
	controlInsecure bool                 // control.go
	controlHandOver *controlops.HandOver // control.go: from the process that exec'd this one
	pullHandler     OpHandler            // control.go
	ops             map[string]OpHandler // control.go
	drainDelay      time.Duration
	advertiseAddr   string          // the registry entry's addr; "" leaves it to an Advertiser
	fromEnv         map[string]bool // the variables WithEnv applied: errors name them
	envApplied      bool            // WithEnv was given: the instance runs under process.Main
	// What the boot's lines on the defaults (init.go) need to know.
	nameSet          bool                  // WithServiceName or SG_SERVICE_NAME gave the name
	redisRequiredSet bool                  // WithRedisRequired or SG_REDIS_REQUIRED said it
	redisReplaced    redis.UniversalClient // the WithRedis client that REDIS_URL's replaced
}

func defaultConfig() config {
	return config{
		name:            DefaultServiceName,
		redisRequired:   true,
		jitter:          DefaultBootJitter,
		ttl:             DefaultServiceTTL,
		healthAddr:      ":" + strconv.Itoa(DefaultHealthPort),
		shutdownTimeout: DefaultShutdownTimeout,
		redisTimeout:    DefaultRedisTimeout,
		bootTimeout:     DefaultBootTimeout,
		phaseTimeouts:   map[phases.State]time.Duration{},
		hooks:           map[phases.State][]Hook{},
		table:           phases.Lifecycle(),
		steps:           lifecycleSteps,
	}
}

// WithServiceName sets the service name (SG_SERVICE_NAME in Main). Without
// either, the instance runs as DefaultServiceName, "demo", and its boot
// says so at warn.
func WithServiceName(name string) Option {
	return optionFunc(func(c *config) { c.name, c.nameSet = name, true })
}

// WithInstanceID sets the instance id (default: generated from the host name and
// a random suffix; SG_INSTANCE_ID in Main).
func WithInstanceID(id string) Option {
	return optionFunc(func(c *config) { c.instance = id })
}

// WithVersion sets the version reported in the registry and health bodies.
func WithVersion(v string) Option {
	return optionFunc(func(c *config) { c.version = v })
}

// WithRedis sets the Redis client used for the ping gate, the registry and the
// control channel. Without one, the connecting phase skips the jitter and the
// ping, and nothing is registered (under Main, without REDIS_URL either, the
// boot says so at warn). A nil client is ignored. Under Main, REDIS_URL wins
// over it, as every variable wins over its option, and the boot warns,
// naming both Redis addresses.
func WithRedis(client redis.UniversalClient) Option {
	return optionFunc(func(c *config) {
		if client != nil {
			c.redis = client
		}
	})
}

// WithRedisRequired says whether a failed ping ends the boot in failed (true, the
// default) or continues degraded (false); SG_REDIS_REQUIRED in Main. The
// default applies to a Redis there is: without one the instance runs
// without Redis, but requiring it in so many words (this option or the
// variable set to true) with no Redis at all is a *ConfigError.
func WithRedisRequired(required bool) Option {
	return optionFunc(func(c *config) { c.redisRequired, c.redisRequiredSet = required, true })
}

// WithRedisTimeout sets the deadline of each Redis call that a transition
// waits for (default 2s; SG_REDIS_TIMEOUT in Main): the ping gate, the
// registration, the control-ops daemon's start and stop, the deregistration
// and the last flush of status updates; the registry's and the daemon's own
// background writes get it too. go-redis's retries count inside it. It must
// be > 0.
//
// go-redis applies a context's deadline to the socket only when the client
// has ContextTimeoutEnabled; Main's client (REDIS_URL) has it. A client given
// with WithRedis should set it too (New logs a warning otherwise): without it
// a Redis that stops answering holds each call up to the client's
// ReadTimeout instead.
func WithRedisTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.redisTimeout = d })
}

// WithBootTimeout bounds the whole boot, phases 1 to 9 (default 5m;
// SG_BOOT_TIMEOUT in Main; 0 disables it). When it runs out, the phase in
// progress is given up on as by WithPhaseTimeout, and the error's Boot field
// is set.
func WithBootTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.bootTimeout = d })
}

// WithPhaseTimeout gives boot state s a time budget d (> 0; no budget by
// default, only the boot timeout). When the phase runs past it, its context
// is cancelled; if it still has not returned PhaseGrace later, the boot stops
// waiting for it. Either way the boot fails with a *PhaseTimeoutError naming
// the phase, its budget and the time spent, the phase's span ends in Error,
// and the instance unwinds through the shutdown steps whose work started
// (Service.OnStop runs if OnStart was called, even if it never returned).
//
// A phase given up on is abandoned, not stopped: Go cannot stop a goroutine,
// so the one running the hook is left to the user's code, and returns when
// that code does. Leak checks must be told about it, e.g. with goleak, as
// this package's test of a hung OnStart does:
//
//	goleak.VerifyNone(t, before, goleak.IgnoreAnyFunction("github.com/stargazer/lifecycle/service.hangingOnStart.OnStart"))
//
// Budgets and the boot timeout run on the real clock, like context deadlines
// (WithClock does not change them).
func WithPhaseTimeout(s phases.State, d time.Duration) Option {
	return optionFunc(func(c *config) { c.phaseTimeouts[s] = d })
}

// WithBootJitter sets the maximum random delay before the ping (default 2s; 0
// disables it; SG_BOOT_JITTER in Main, which overrides it).
func WithBootJitter(max time.Duration) Option {
	return optionFunc(func(c *config) { c.jitter = max })
}

// WithServiceTTL sets the registry entry's TTL (default 30s; SG_SERVICE_TTL in
// Main, which overrides it). The heartbeat runs every max(1s, TTL/3).
func WithServiceTTL(ttl time.Duration) Option {
	return optionFunc(func(c *config) { c.ttl = ttl })
}

// WithHealthAddr sets the address the health server binds, "host:port" as
// health.WithAddr takes it (SG_HEALTH_HOST and SG_HEALTH_PORT in Main, which
// override its parts). The default is ":9090"; "127.0.0.1:0" picks a free
// port on loopback.
//
// An address the server cannot bind (a port another process holds, a port
// below 1024 without the capability, a host not this machine's) fails the
// boot in init, before anything touches Redis (or in phase 9 if it was
// taken meanwhile), with a *ConfigError naming WithHealthAddr, or
// SG_HEALTH_PORT (SG_HEALTH_HOST) under Main, and the address: Main exits 2,
// since a restart would not free the port.
func WithHealthAddr(addr string) Option {
	return optionFunc(func(c *config) { c.healthAddr = addr })
}

// WithAdvertiseAddr sets the address clients call the instance at,
// "host:port" (SG_ADVERTISE_ADDR in Main, which overrides it): phase 8 writes
// it in the registry entry's addr field, where registry.Watcher and package
// balancer find it. It wins over what a Service that implements Advertiser
// returns; without either, nothing is advertised. New refuses an address
// without a host, with an unspecified one (0.0.0.0, ::) or without a port
// 1-65535 (fleetenv.ValidateAdvertiseAddr), naming it.
func WithAdvertiseAddr(addr string) Option {
	return optionFunc(func(c *config) { c.advertiseAddr = addr })
}

// WithoutHealthServer turns the health server off; phase 9 then does nothing.
func WithoutHealthServer() Option {
	return optionFunc(func(c *config) { c.healthDisabled = true })
}

// WithShutdownTimeout bounds the shutdown (default 30s): the drain delay, if
// a stop waits it out, and the shutdown steps share it.
func WithShutdownTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.shutdownTimeout = d })
}

// WithDrainDelay makes a stop or a restart of a running instance take it out
// of rotation first (SG_DRAIN_DELAY in Main, which overrides it; default 0,
// no drain):
// the instance goes running -> draining, where readiness reports 503 while
// Service.Run goes on, and after d the shutdown steps begin. Load balancers
// and Kubernetes endpoints stop sending traffic during the delay, so the
// requests still arriving in its first seconds are served, not refused.
// SkipDrainDelay (Main: a second signal) ends it early.
//
// The delay counts inside the shutdown timeout (WithShutdownTimeout), so d
// must be shorter than it: what is left of the timeout bounds the steps. A
// stop or a restart of an instance an operator already drained (a drain
// control op) does not wait again, and a Run that returns on its own during
// the delay ends it.
func WithDrainDelay(d time.Duration) Option {
	return optionFunc(func(c *config) { c.drainDelay = d })
}

// WithTracerProvider sets where spans go. The default is the global provider
// (which Main sets up from the OTEL_* variables). A nil tp is ignored.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) {
		if tp != nil {
			c.tp = tp
		}
	})
}

// WithMeterProvider sets where metrics go. The default is the global provider. A
// nil mp is ignored.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) {
		if mp != nil {
			c.mp = mp
		}
	})
}

// WithLogger sets the logger the instance logs through; New adds the
// service and instance attributes to it (Instance.Logger). A nil logger is
// ignored.
//
// Without it, New takes slog.Default() as it is when New runs. process.Main
// (and process.Run) give their own first: a slog.TextHandler on stderr
// (Config.Stderr) at level Info, which a WithLogger among Main's options
// replaces. Main logs through Instance.Logger once New returned an
// instance; what it logs before (an invalid environment or option, exit 2)
// goes through its own handler, whatever WithLogger says.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) {
		if l != nil {
			c.log = l
		}
	})
}

// WithClock sets the clock behind the jitter, the heartbeat and the health
// checks; tests use clockwork's fake clock. A nil clock is ignored.
func WithClock(clock clockwork.Clock) Option {
	return optionFunc(func(c *config) {
		if clock != nil {
			c.clock = clock
		}
	})
}

// WithHook adds work to a boot phase. Hooks are allowed in the phases where
// the Service has work of its own: init (as the boot begins, before the
// jitter and the ping: work that needs no Redis), configuring,
// instrumenting, loading_modules, building_adapters and starting; they run
// after the Service's method for that phase (LocalConfigurer.ConfigureLocal,
// Configurer.Configure, ..., Service.OnStart), in the order given. A nil
// hook is ignored.
func WithHook(state phases.State, h Hook) Option {
	return optionFunc(func(c *config) {
		if h != nil {
			c.hooks[state] = append(c.hooks[state], h)
		}
	})
}

// WithTransitionObserver adds an observer of every transition, called after the
// built-in span, metrics, log and registry observers. A nil o is ignored.
func WithTransitionObserver(o lifecycle.Observer) Option {
	return optionFunc(func(c *config) {
		if o != nil {
			c.observers = append(c.observers, o)
		}
	})
}

// WithHealthOption passes an option to the health server (an extra check, an
// extra handler). A nil o is ignored.
func WithHealthOption(o health.Option) Option {
	return optionFunc(func(c *config) {
		if o != nil {
			c.healthOpts = append(c.healthOpts, o)
		}
	})
}

// validate checks the configuration New was given, and fills in the
// instance id.
func (c *config) validate(svc Service) error {
	if svc == nil {
		return &ConfigError{Name: "service", Value: "<nil>", Err: errors.New("a Service is required")}
	}
	if err := fleetenv.ValidateService(c.name); err != nil {
		return &ConfigError{Name: c.nameSource("WithServiceName", fleetenv.ServiceName), Value: c.name, Err: err}
	}
	if c.instance == "" {
		c.instance = generateInstanceID()
	}
	if err := fleetenv.ValidateInstance(c.instance); err != nil {
		return &ConfigError{Name: c.nameSource("WithInstanceID", fleetenv.InstanceID), Value: c.instance, Err: err}
	}
	if c.jitter < 0 {
		return &ConfigError{Name: c.nameSource("WithBootJitter", fleetenv.BootJitter), Value: c.jitter.String(), Err: errors.New("want >= 0")}
	}
	if err := fleetenv.ValidateServiceTTL(c.ttl); err != nil {
		return &ConfigError{Name: c.nameSource("WithServiceTTL", fleetenv.ServiceTTL), Value: c.ttl.String(), Err: err}
	}
	if c.shutdownTimeout <= 0 {
		return &ConfigError{Name: "WithShutdownTimeout", Value: c.shutdownTimeout.String(), Err: errors.New("want > 0")}
	}
	if c.redisTimeout <= 0 {
		return &ConfigError{Name: c.nameSource("WithRedisTimeout", fleetenv.RedisTimeout), Value: c.redisTimeout.String(), Err: errors.New("want > 0")}
	}
	if c.drainDelay < 0 || c.drainDelay >= c.shutdownTimeout {
		return &ConfigError{Name: c.nameSource("WithDrainDelay", fleetenv.DrainDelay), Value: c.drainDelay.String(),
			Err: fmt.Errorf("want a duration >= 0 and shorter than the shutdown timeout (%s), which it counts inside", c.shutdownTimeout)}
	}
	if c.advertiseAddr != "" {
		if err := fleetenv.ValidateAdvertiseAddr(c.advertiseAddr); err != nil {
			return &ConfigError{Name: c.nameSource("WithAdvertiseAddr", fleetenv.AdvertiseAddr), Value: c.advertiseAddr, Err: err}
		}
	}
	if c.bootTimeout < 0 {
		return &ConfigError{Name: c.nameSource("WithBootTimeout", fleetenv.BootTimeout), Value: c.bootTimeout.String(), Err: errors.New("want >= 0 (0 disables it)")}
	}
	if err := c.requireRedisError(); err != nil {
		return err
	}
	return checkSteps(c.table, c.steps)
}

// nameSource names what set a setting, for errors: the environment
// variable when the environment set it (WithEnv), else the option.
func (c *config) nameSource(option, variable string) string {
	if c.fromEnv[variable] {
		return variable
	}
	return option
}
