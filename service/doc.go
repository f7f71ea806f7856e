// Package service runs a service on the fleet's boot and shutdown contract:
// a Service (OnStart, Run, OnStop) is driven through the boot phases,
// running and a reverse-order shutdown, the states of phases.Lifecycle, and
// every transition is a span, a metric, a log line and a status update in
// the Redis registry.
//
//	in, err := service.New(&worker{},
//		service.WithServiceName("worker"),
//		service.WithRedis(rdb),                // the registry and control ops; without it, neither
//		service.WithHealthAddr("127.0.0.1:0"), // /livez, /readyz, /healthz (default :9090)
//		service.WithBootJitter(0),             // no random delay before the ping (default up to 2s)
//	)
//	if err != nil {
//		return err // a *ConfigError naming the option
//	}
//	return in.Run(ctx) // boots, runs, and shuts down when ctx ends or Run returns
//
// A process calls process.Main instead, which adds the environment, signals,
// OpenTelemetry exporters, systemd and the restart by exec.
//
//	init -> connecting -> configuring -> instrumenting -> loading_modules ->
//	building_adapters -> starting -> registering -> serving_health -> running ->
//	[draining ->] stopping_daemons -> stopping_health -> deregistering ->
//	cleaning_up -> stopped (or failed)
//
// A failed Redis ping fails the boot when Redis is required and goes on
// degraded when it is not. The client's Redis user needs the sg-instance
// role of docs/redis-acl.md in the repository; a call Redis refuses (NOPERM:
// the ping, the registration of phase 8, the control-ops daemon's start in
// 8.5) is handled the same way, its error naming the rule the role needed. A failing phase or Run unwinds through the
// shutdown steps and ends in failed. A stop (RequestStop, Shutdown, the end
// of Run's context) can arrive in any phase: the phase's context is
// cancelled and the shutdown skips the steps whose work never began;
// OnStop runs only if OnStart was called. With a drain delay a running
// instance first leaves rotation (draining) for that long. Drain and
// Undrain take it out of rotation and back without stopping it;
// RequestRestart ends it for a new process (HandOver).
//
// Every Redis call a transition waits for has a deadline (WithRedisTimeout),
// the boot and each phase may have one (WithBootTimeout, WithPhaseTimeout),
// and the shutdown has one (WithShutdownTimeout): a fault never hangs the
// lifecycle. Control ops (package controlops) are rejected until the
// instance has a key (WithControlKeys) or opts in to unsigned ops
// (WithControlInsecure).
//
// # Optional interfaces
//
// A Service may implement, beside OnStart, Run and OnStop:
//
//   - Binder: Bind(*Instance), called once by New before it returns (so
//     before any phase, under process.Main too): the service keeps its
//     instance, for the list below;
//   - LocalConfigurer: configuration that needs no Redis, in phase 1 before
//     the jitter and the ping, so that its *ConfigError exits 2 whatever Redis
//     does;
//   - Configurer, Instrumenter, ModuleLoader, AdapterBuilder: the work of
//     phases 3 to 6;
//   - Advertiser: the address the registry entry advertises, read at phase 8.
//
// # Components
//
// A service made of several components (an HTTP API and a stream worker)
// runs them all under Service.Run, so that either failing fails the
// instance; from its Instance (Binder) they get:
//
//   - Leaving: a context that ends the moment a stop or a restart is asked
//     for (before any drain delay) or something fails the instance, and no
//     later than Run's context: a worker stops taking new work then, and
//     finishes the work in hand under Run's context;
//   - Redis: the instance's own client (nil without Redis), not to be
//     closed; BlockingRedis: a client for blocking reads that a context's
//     end closes, so that a read blocked in XREADGROUP ends at once (a
//     cancelled context does not end one in go-redis);
//   - Logger: the instance's logger, with its service and instance
//     attributes, the one process.Main logs through.
//
// examples/orders in the repository is such a service.
//
// # Options
//
// Under process.Main the variable after an option, in parentheses, wins over
// it where set; the others are set in code only.
//
//   - identity: WithServiceName (SG_SERVICE_NAME), WithInstanceID
//     (SG_INSTANCE_ID), WithVersion, WithAdvertiseAddr (SG_ADVERTISE_ADDR)
//   - Redis: WithRedis (REDIS_URL), WithRedisRequired (SG_REDIS_REQUIRED),
//     WithRedisTimeout (SG_REDIS_TIMEOUT), WithServiceTTL (SG_SERVICE_TTL)
//   - control: WithControlKeys (SG_CONTROL_KEY), WithControlInsecure
//     (SG_CONTROL_INSECURE), WithPullHandler, WithOperation
//   - time limits: WithBootJitter (SG_BOOT_JITTER), WithBootTimeout
//     (SG_BOOT_TIMEOUT), WithPhaseTimeout, WithDrainDelay (SG_DRAIN_DELAY),
//     WithShutdownTimeout
//   - work: WithHook, WithTransitionObserver
//   - health: WithHealthAddr (SG_HEALTH_HOST, SG_HEALTH_PORT), WithHealthOption,
//     WithoutHealthServer; SG_HEALTH_SHOW_ADDRS adds health.WithAddresses
//     after the health options given (default: addresses hidden)
//   - telemetry: WithTracerProvider, WithMeterProvider (the global ones, set
//     by Main from OTEL_*), WithLogger (Main's: text on stderr), WithClock
//   - Main only: WithEnv, given last; the rest is process.Config
//
// Inside, the work of each boot phase and shutdown step is one row of a step
// table beside the transition table, and the instance's own state (who drives
// it, why it stops) is one stage and one stop reason with a declared table of
// moves: docs/architecture.md in the repository walks through both.
package service
