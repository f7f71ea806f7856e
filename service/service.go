package service

import (
	"context"
	"errors"
)

// Service is what a service author implements.
type Service interface {
	// OnStart starts the service's machinery (phase 7). Its context is cancelled
	// when a stop arrives during the phase.
	OnStart(ctx context.Context) error
	// Run does the service's work until ctx is cancelled (a stop) and then
	// returns. Returning nil before that is a clean stop; returning an error is a
	// failure (exit code 1; 2 when it wraps ErrConfig). An error that wraps
	// context.Canceled after a stop is a clean stop.
	Run(ctx context.Context) error
	// OnStop releases what OnStart started (shutdown step S4). It is called only if
	// OnStart was called, whether OnStart succeeded or not. Its context ends at
	// the shutdown timeout.
	OnStop(ctx context.Context) error
}

// Optional phase hooks a Service may implement; each runs in its phase before the
// hooks given with WithHook.
type (
	// LocalConfigurer loads the configuration that needs no Redis (phase 1,
	// init): it runs as the boot begins, before the jitter and the ping, so
	// its error fails the boot before anything touched Redis, whatever Redis
	// does. A *ConfigError (an error wrapping ErrConfig) from it makes
	// process.Main exit 2 even with Redis down, where the same error from
	// Configure would never be reached. A Service may implement both.
	LocalConfigurer interface {
		ConfigureLocal(ctx context.Context) error
	}
	// Configurer loads configuration (phase 3, configuring), after the Redis
	// ping: with Redis required and down, the boot fails at the ping (exit
	// 1) before Configure runs. Put what needs no Redis in LocalConfigurer.
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

// Advertiser is implemented by a Service that knows, once OnStart has
// returned, the address clients should call it at: for instance the port its
// listener bound when it asked for port 0. Phase 8 calls AdvertiseAddr once,
// before it completes the registry entry, and writes the result in the
// entry's addr field ("" advertises nothing); an address that is not
// "host:port" with a host and a port 1-65535 fails the phase, naming it.
// WithAdvertiseAddr and SG_ADVERTISE_ADDR, when set, win: an operator knows
// better where clients reach the process (a pod IP, a NAT).
type Advertiser interface {
	AdvertiseAddr() string
}

// Binder is implemented by a Service that needs its Instance: its Redis
// client (Instance.Redis), its logger (Instance.Logger), the context that
// ends when it begins to leave (Instance.Leaving), its identity. New calls
// Bind exactly once, with the instance it built, just before it returns it:
// before any phase, and under process.Main too, where the service never sees
// New. A New that fails calls no Bind.
//
// Bind keeps in; it must not block, and must not call Boot, Run or Shutdown
// (New has not returned). A panic in Bind is not recovered: it is a bug of
// the service, and the caller of New's.
type Binder interface {
	Bind(in *Instance)
}

// Errors callers branch on.
var (
	// ErrRedisUnavailable: the Redis ping failed and Redis is required.
	ErrRedisUnavailable = errors.New("lifecycle: redis is required but unavailable")
	// ErrStopped: Boot returns it when a stop arrived before the boot finished.
	ErrStopped = errors.New("lifecycle: stopped before boot finished")
	// ErrAlreadyStarted: Boot or Run was called a second time.
	ErrAlreadyStarted = errors.New("lifecycle: already started")
)
