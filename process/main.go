package process

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/service"
)

// Exit codes of Main.
const (
	ExitOK     = 0 // reached stopped
	ExitFailed = 1 // boot or run failed (reached failed), or a signal during the shutdown steps
	// ExitConfig is invalid configuration: a variable or an option, found
	// before anything touched Redis, or an error wrapping service.ErrConfig
	// that failed the instance (a Configure returning a *service.ConfigError).
	ExitConfig = 2
	// ExitRestart is the exit code of a restart op when the process leaves it
	// to a supervisor (Config.RestartExit, SG_RESTART_EXIT_CODE) instead of
	// replacing itself.
	ExitRestart = 3
)

// SignalWindow is how long after a signal another one counts as the same
// request (see Main).
const SignalWindow = 500 * time.Millisecond

// Main runs svc as the process: it reads the environment (see ParseEnv), sets up
// OpenTelemetry from the standard OTEL_* variables, boots, runs, and shuts down on
// SIGINT or SIGTERM, then exits with ExitOK, ExitFailed or ExitConfig (after
// a restart op, the package doc says which code). It never returns. The
// options are service.New's; the environment's settings win over them where
// set, REDIS_URL over service.WithRedis too (the boot warns, naming both).
// Without REDIS_URL or WithRedis the instance runs without Redis (no
// registry entry, no control ops), and the boot says so at warn;
// SG_REDIS_REQUIRED=false says no Redis is meant (a line at info instead),
// and SG_REDIS_REQUIRED=true exits 2: there is no Redis to require.
//
// Signals: the first one stops the instance, through the drain delay
// (SG_DRAIN_DELAY) when it is running. A signal during the drain delay ends
// the delay: the shutdown steps begin at once, and the stop is still clean. A
// signal while the shutdown steps run (a third one, or a second one without a
// delay to skip) exits at once with code 1. A signal that comes less than
// SignalWindow after the one before is that one again, not a second request:
// coreutils timeout and some supervisors signal both the process and its
// group, so one stop arrives as two signals a millisecond apart.
//
// Under systemd (NOTIFY_SOCKET set) Main tells the service manager what the
// instance does: see the package doc.
func Main(svc service.Service, opts ...service.Option) {
	os.Exit(Run(context.Background(), svc, opts...))
}

// Run is Main without os.Exit: it returns the exit code. Cancelling ctx acts
// as a first signal.
func Run(ctx context.Context, svc service.Service, opts ...service.Option) int {
	return Config{}.Run(ctx, svc, opts...)
}

// Config holds what only a process has, and only Main and Run honour: the
// zero Config is theirs.
type Config struct {
	// Getenv reads the fleet's variables, REDIS_URL and SG_* (default
	// os.Getenv). The OTEL_* variables are read from the process environment
	// whatever it is: the OpenTelemetry SDK reads them there. Run sets the
	// global OpenTelemetry providers, which an instance takes when it is
	// made: a second Run in one process (a test) exports through the first
	// Run's providers, shut down by then, unless given its own
	// (service.WithTracerProvider, service.WithMeterProvider).
	Getenv func(string) string
	// Stderr is where the default logger writes (default os.Stderr), when no
	// service.WithLogger is given.
	Stderr io.Writer
	// RestartExit, when set (3-125, e.g. ExitRestart), makes a restart op end
	// Run with that code once the instance is stopped, for a supervisor to
	// start the process again, instead of replacing the process with exec.
	// SG_RESTART_EXIT_CODE overrides it. A supervisor must keep
	// SG_INSTANCE_ID for the new process to finish the restart (release its
	// slot, report done).
	RestartExit int

	clock clockwork.Clock // go-redis's log lines' rate limit; tests set it
}

// Run runs svc as Run does, with c's settings. After a restart op stopped
// the instance cleanly, it either returns the restart exit code
// (RestartExit, SG_RESTART_EXIT_CODE) or, by default, replaces the process
// with exec: the same executable, arguments and environment, with
// SG_INSTANCE_ID set to the instance id and SG_RESTART_* to what the
// instance hands over (service.HandOver); then it does not return, unless
// exec fails (ExitFailed). Everything Run set up (OpenTelemetry, the Redis
// client, signal handling) is released before the exec; the caller's own
// deferred functions are not run.
func (c Config) Run(ctx context.Context, svc service.Service, opts ...service.Option) int {
	code, plan := c.run(ctx, svc, opts...)
	if plan == nil {
		return code
	}
	if err := plan.exec(); err != nil {
		plan.log.Error("restart failed: cannot replace the process", "error", err)
		return ExitFailed
	}
	return code // not reached: exec replaced the process
}

func (c Config) run(ctx context.Context, svc service.Service, opts ...service.Option) (int, *restartPlan) {
	if c.Getenv == nil {
		c.Getenv = os.Getenv
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	if c.clock == nil {
		c.clock = clockwork.NewRealClock()
	}
	log := slog.New(slog.NewTextHandler(c.Stderr, nil))
	// go-redis's logger is process-global: it prints a line per failed dial,
	// which during an outage is several a second.
	redisLog := newRedisLogger(log, c.clock)
	redis.SetLogger(redisLog)

	env, redisTLS, err := parseEnv(c.Getenv)
	if err != nil {
		log.Error("configuration error", "error", err)
		return ExitConfig, nil
	}
	if env.Redis != nil {
		defer env.Redis.Close()
	}
	restartExit, err := c.restartExit()
	if err != nil {
		log.Error("configuration error", "error", err)
		return ExitConfig, nil
	}
	notify := newNotifier(restartExit == 0, c.clock)
	all := append([]service.Option{service.WithLogger(log)}, opts...)
	all = append(all, service.WithEnv(env))
	if notify != nil {
		all = append(all, service.WithTransitionObserver(notify))
	}
	in, err := service.New(svc, all...)
	if err != nil {
		log.Error("configuration error", "error", err)
		if errors.Is(err, service.ErrConfig) {
			return ExitConfig, nil
		}
		return ExitFailed, nil
	}
	log = in.Logger()
	redisLog.setLogger(log)
	// A rotated client certificate that does not load is logged as the
	// instance's.
	redisTLS.SetLogger(log)

	// Signals are handled until everything below is over, the flush of the
	// telemetry included: a late signal is then the same request again (see
	// SignalWindow) or a request to exit at once, never the default action.
	stopSignals := handleSignals(in, log, c.clock)
	defer stopSignals()
	shutdownOTel, err := setupOTel(ctx, in)
	if err != nil {
		log.Error("configuration error", "error", err)
		return ExitConfig, nil
	}
	defer shutdownOTel()
	notify.start(in, log)
	result := in.Run(ctx)
	// The last STATUS= goes out before the process exits.
	notify.close()
	return exitCode(in, result, restartExit, log)
}

// restartExit returns the exit code of a restart for a supervisor:
// SG_RESTART_EXIT_CODE, else RestartExit; 0 when a restart execs.
func (c Config) restartExit() (int, error) {
	want := errors.New("want an exit code 3-125, e.g. 3 (0-2 mean stopped, failed, bad configuration)")
	if v := c.Getenv(EnvRestartExitCode); v != "" {
		code, err := strconv.Atoi(v)
		if err != nil || code < 3 || code > 125 {
			// 0, 1 and 2 already mean stopped, failed and bad configuration.
			return 0, &service.ConfigError{Name: EnvRestartExitCode, Value: v, Err: want}
		}
		return code, nil
	}
	if code := c.RestartExit; code != 0 && (code < 3 || code > 125) {
		return 0, &service.ConfigError{Name: "Config.RestartExit", Value: strconv.Itoa(code), Err: want}
	}
	return c.RestartExit, nil
}

// handleSignals asks the instance to stop on the first SIGINT or SIGTERM; a
// later one (SignalWindow or more after the one before) ends the drain delay
// if the stop is waiting it out, and exits the process at once otherwise.
// The returned func stops listening and waits for the listener goroutine.
func handleSignals(in *service.Instance, log *slog.Logger, clock clockwork.Clock) func() {
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var last time.Time
		select {
		case sig := <-ch:
			last = clock.Now()
			in.RequestStop()
			hint := "send it again to exit at once"
			if phases.Lifecycle().Role(in.State()) == phases.RoleDraining {
				hint = "send it again to skip the drain delay, a third time to exit at once"
			}
			log.Info("signal received: shutting down ("+hint+")", "signal", sig.String())
		case <-done:
			return
		}
		for {
			select {
			case sig := <-ch:
				now := clock.Now()
				if now.Sub(last) < SignalWindow {
					// The same request, sent to the process and its group.
					log.Info("signal received again within the signal window: the same stop request", "signal", sig.String(), "window", SignalWindow)
					last = now
					continue
				}
				last = now
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
	})
	return func() {
		signal.Stop(ch)
		close(done)
		wg.Wait()
	}
}
