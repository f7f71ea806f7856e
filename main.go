package lifecycle

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// Exit codes of Main.
const (
	ExitOK     = 0 // reached stopped
	ExitFailed = 1 // boot or run failed (reached failed), or a signal during the shutdown steps
	ExitConfig = 2 // invalid configuration, found before anything touched Redis
)

// Main runs svc as the process: it reads the environment (see ParseEnv), sets up
// OpenTelemetry from the standard OTEL_* variables, boots, runs, and shuts down on
// SIGINT or SIGTERM, then exits with ExitOK, ExitFailed or ExitConfig. It never
// returns.
//
// Signals: the first one stops the instance, through the drain delay
// (SG_DRAIN_DELAY) when it is running. A signal during the drain delay ends
// the delay: the shutdown steps begin at once, and the stop is still clean. A
// signal while the shutdown steps run (a third one, or a second one without a
// delay to skip) exits at once with code 1.
//
// Under systemd (NOTIFY_SOCKET set) Main tells the service manager what the
// instance does: see WithSystemdNotify.
func Main(svc Service, opts ...Option) {
	os.Exit(MainContext(context.Background(), svc, opts...))
}

// MainContext is Main without os.Exit: it returns the exit code. Cancelling ctx
// acts as a first signal. Options given here are defaults; environment variables
// that are set override them.
//
// MainContext routes go-redis's own log lines (a failed dial per command during
// an outage) through its logger, at warn, the first at once and then at most one
// a minute with the count left out. go-redis has one logger per process
// (redis.SetLogger): MainContext replaces it, for every client of the process,
// and it stays so after MainContext returns.
//
// After a restart control op has stopped the instance cleanly, MainContext
// either returns the restart exit code (WithRestartExit or SG_RESTART_EXIT_CODE,
// e.g. ExitRestart) or, by default, replaces the process with exec: the same
// executable, arguments and environment, with SG_INSTANCE_ID set to the
// instance id, SG_RESTART_TRACEPARENT to the op's trace, and
// SG_RESTART_NOT_BEFORE and SG_RESTART_NONCES to the control-ops daemon's
// hand-over (controlops.HandOver). Then it does not return, unless exec fails
// (ExitFailed). With the hand-over the new process executes the ops sent while
// the instance restarted, and none that the old one handled, whatever happened
// to Redis. After an exit for a supervisor the next process has none: ops
// issued more than the skew (5s) before it started are rejected as stale. Everything MainContext set up
// (OpenTelemetry, the Redis client, signal handling) is released before the
// exec; the caller's own deferred functions are not run.
func MainContext(ctx context.Context, svc Service, opts ...Option) int {
	code, plan := mainContext(ctx, svc, opts...)
	if plan == nil {
		return code
	}
	if err := plan.exec(); err != nil {
		plan.log.Error("restart failed: cannot replace the process", "error", err)
		return ExitFailed
	}
	return code // not reached: exec replaced the process
}

func mainContext(ctx context.Context, svc Service, opts ...Option) (int, *restartPlan) {
	cfg := defaultConfig()
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	if cfg.getenv == nil {
		cfg.getenv = os.Getenv
	}
	if cfg.stderr == nil {
		cfg.stderr = os.Stderr
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.NewTextHandler(cfg.stderr, nil))
	}
	log := cfg.log
	clock := cfg.clock
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	// go-redis's logger is process-global: it prints a line per failed dial,
	// which during an outage is several a second.
	redis.SetLogger(newRedisLogger(log, clock))

	env, err := ParseEnv(cfg.getenv)
	if err != nil {
		log.Error("configuration error", "error", err)
		return ExitConfig, nil
	}
	env.applyTo(&cfg)
	if env.Redis != nil {
		defer env.Redis.Close()
	}
	if err := restartEnv(&cfg); err != nil {
		log.Error("configuration error", "error", err)
		return ExitConfig, nil
	}

	shutdownOTel, err := setupOTel(ctx, &cfg)
	if err != nil {
		log.Error("configuration error", "error", err)
		return ExitConfig, nil
	}
	defer shutdownOTel()

	if !cfg.notifySet {
		cfg.notify = true // a process is one instance: it speaks for the unit
	}
	cfg.execRestart = cfg.restartExit == 0
	in, err := newInstance(svc, cfg)
	if err != nil {
		log.Error("configuration error", "error", err)
		if errors.Is(err, ErrConfig) {
			return ExitConfig, nil
		}
		return ExitFailed, nil
	}

	stopSignals := handleSignals(in, log)
	defer stopSignals()

	return in.exitCode(in.Run(ctx))
}

// applyTo overrides cfg with the variables that are set.
func (e Env) applyTo(cfg *config) {
	if e.Redis != nil {
		cfg.redis = e.Redis
	}
	if e.RedisRequiredSet {
		cfg.redisRequired = e.RedisRequired
	}
	if e.RedisTimeoutSet {
		cfg.redisTimeout = e.RedisTimeout
	}
	if e.BootJitterSet {
		cfg.jitter = e.BootJitter
	}
	if e.BootTimeoutSet {
		cfg.bootTimeout = e.BootTimeout
	}
	if e.ServiceTTLSet {
		cfg.ttl = e.ServiceTTL
	}
	if e.HealthPortSet || e.HealthHostSet {
		host, port, err := net.SplitHostPort(cfg.healthAddr)
		if err != nil {
			host, port = "", strconv.Itoa(DefaultHealthPort)
		}
		if e.HealthHostSet {
			host = strings.Trim(e.HealthHost, "[]") // JoinHostPort adds the brackets
		}
		if e.HealthPortSet {
			port = strconv.Itoa(e.HealthPort)
		}
		cfg.healthAddr = net.JoinHostPort(host, port)
	}
	if e.ServiceName != "" {
		cfg.name = e.ServiceName
	}
	if e.InstanceID != "" {
		cfg.instance = e.InstanceID
	}
	if len(e.ControlKeys) > 0 {
		cfg.controlKeys = e.ControlKeys
	}
	if e.ControlInsecureSet {
		cfg.controlInsecure = e.ControlInsecure
	}
	if e.DrainDelaySet {
		cfg.drainDelay = e.DrainDelay
		cfg.drainDelayName = EnvDrainDelay
	}
	if e.AdvertiseAddr != "" {
		cfg.advertiseAddr, cfg.advertiseName = e.AdvertiseAddr, EnvAdvertiseAddr
	}
}

// handleSignals asks the instance to stop on the first SIGINT or SIGTERM; a
// later one ends the drain delay if the stop is waiting it out, and exits the
// process at once otherwise. The returned func stops listening and waits for
// the listener goroutine.
func handleSignals(in *Instance, log *slog.Logger) func() {
	ch := make(chan os.Signal, 3)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case sig := <-ch:
			hint := "send it again to exit at once"
			if in.cfg.drainDelay > 0 {
				hint = "send it again to skip the drain delay, a third time to exit at once"
			}
			log.Info("signal received: shutting down ("+hint+")", "signal", sig.String())
			in.RequestStop()
		case <-done:
			return
		}
		for {
			select {
			case sig := <-ch:
				if in.SkipDrainDelay() {
					log.Info("signal received during the drain delay: shutting down now (send it again to exit at once)", "signal", sig.String())
					continue
				}
				log.Error("signal received during the shutdown: exiting at once", "signal", sig.String(), "state", string(in.State()))
				os.Exit(ExitFailed)
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
		wg.Wait()
	}
}

// setupOTel installs, unless the caller gave its own providers, a TracerProvider
// and a MeterProvider configured from the OTEL_* variables through autoexport, with
// service.name and service.instance.id on the resource. Without any exporter
// variable set, nothing is exported (rather than retrying a collector that is not
// there). It also installs the W3C trace-context propagator.
func setupOTel(ctx context.Context, cfg *config) (func(), error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	if cfg.instance == "" {
		cfg.instance = generateInstanceID()
	}
	var closers []func(context.Context) error
	shutdown := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i](ctx)
		}
	}
	res, err := resource.New(ctx,
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
		resource.WithAttributes(
			semconv.ServiceName(cfg.name),
			semconv.ServiceInstanceID(cfg.instance),
			semconv.ServiceVersion(cfg.version),
		),
	)
	if err != nil && res == nil {
		return shutdown, &ConfigError{Name: "OTEL_RESOURCE_ATTRIBUTES", Value: cfg.getenv("OTEL_RESOURCE_ATTRIBUTES"), Err: err}
	}
	none := func(context.Context) (sdktrace.SpanExporter, error) { return nil, nil }
	if cfg.tp == nil {
		var spanOpts []autoexport.SpanOption
		if !otelTracesConfigured(cfg.getenv) {
			spanOpts = append(spanOpts, autoexport.WithFallbackSpanExporter(none))
		}
		exp, err := autoexport.NewSpanExporter(ctx, spanOpts...)
		if err != nil {
			return shutdown, &ConfigError{Name: "OTEL_TRACES_EXPORTER", Value: cfg.getenv("OTEL_TRACES_EXPORTER"), Err: err}
		}
		topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
		if exp != nil && !autoexport.IsNoneSpanExporter(exp) {
			topts = append(topts, sdktrace.WithBatcher(exp))
		}
		tp := sdktrace.NewTracerProvider(topts...)
		closers = append(closers, tp.Shutdown)
		otel.SetTracerProvider(tp)
		cfg.tp = tp
	}
	if cfg.mp == nil && otelMetricsConfigured(cfg.getenv) {
		reader, err := autoexport.NewMetricReader(ctx)
		if err != nil {
			return shutdown, &ConfigError{Name: "OTEL_METRICS_EXPORTER", Value: cfg.getenv("OTEL_METRICS_EXPORTER"), Err: err}
		}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(reader))
		closers = append(closers, mp.Shutdown)
		otel.SetMeterProvider(mp)
		cfg.mp = mp
	}
	return shutdown, nil
}

func otelTracesConfigured(getenv func(string) string) bool {
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		if getenv(k) != "" {
			return true
		}
	}
	return false
}

func otelMetricsConfigured(getenv func(string) string) bool {
	for _, k := range []string{"OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"} {
		if getenv(k) != "" {
			return true
		}
	}
	return false
}

// WithEnv sets the environment lookup Main uses (default os.Getenv); tests
// use it. Only Main honours it.
func WithEnv(getenv func(string) string) Option {
	return mainOption("WithEnv", func(c *config) {
		if getenv != nil {
			c.getenv = getenv
		}
	})
}

// WithStderr sets where Main's default logger writes (default os.Stderr).
// Only Main honours it.
func WithStderr(w io.Writer) Option {
	return mainOption("WithStderr", func(c *config) {
		if w != nil {
			c.stderr = w
		}
	})
}
