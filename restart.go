package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/controlops"
)

// The restart flow is in the package doc; MainContext carries it out.

// ExitRestart is the default exit code of a restart when the process leaves it
// to a supervisor (WithRestartExit, SG_RESTART_EXIT_CODE) instead of replacing
// itself.
const ExitRestart = 3

// Environment variables of the restart hand-over.
const (
	// EnvRestartExitCode, when set (3-125; 0-2 mean stopped, failed and bad
	// configuration), makes a restart exit with that code for a supervisor to
	// start the process again, instead of exec.
	EnvRestartExitCode = "SG_RESTART_EXIT_CODE"
	// EnvRestartTraceparent is set by a restarting process for its successor:
	// the new boot trace is linked to the restart op's trace.
	EnvRestartTraceparent = "SG_RESTART_TRACEPARENT"
	// EnvRestartNotBefore is set by a process that restarts with exec for its
	// successor: the control-ops daemon's not-before time (unix ms), so that
	// the ops sent while it restarted are not stale (controlops.HandOver).
	EnvRestartNotBefore = "SG_RESTART_NOT_BEFORE"
	// EnvRestartNonces goes with EnvRestartNotBefore: the nonces of the ops
	// the old process handled that the successor must not accept again
	// (controlops.FormatNonces).
	EnvRestartNonces = "SG_RESTART_NONCES"
)

// RequestRestart asks for a shutdown that leaves the instance through the
// restart event (running -> stopping_daemons) instead of stop, and returns at
// once. With a drain delay (WithDrainDelay) a running instance first waits it
// out in draining (restart [drain_delay]), out of rotation, as a stop does:
// its process goes away just the same. It is refused with an
// *InvalidEventError unless the instance is running or draining (after Boot
// or in Run) and no stop was asked for. Restarting reports it afterwards, so
// the process can replace itself.
func (in *Instance) RequestRestart() error { return in.requestStop(restartAsked, false) }

// Restarting reports whether the shutdown was asked for by a restart.
func (in *Instance) Restarting() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.reason == restartAsked
}

// requestRestartFrom is RequestRestart for a control op: the shutdown joins the
// op's trace, and the next process's boot is linked to it.
func (in *Instance) requestRestartFrom(ctx context.Context) error {
	in.mu.Lock()
	in.restartSpan = trace.SpanContextFromContext(ctx)
	in.mu.Unlock()
	return in.RequestRestart()
}

// WithRestartExit makes a restart op end MainContext with code (3-125, e.g.
// ExitRestart) once the instance is stopped, for a supervisor to start the
// process again, instead of replacing the process with exec. A supervisor must
// keep SG_INSTANCE_ID for the new process to finish the restart (release its
// slot, report done).
func WithRestartExit(code int) Option {
	return mainOption("WithRestartExit", func(c *config) { c.restartExit = code })
}

// exitCode is what MainContext does once Run returned result: exit with
// ExitOK or ExitFailed; after a restart, exit with the restart exit code
// (WithRestartExit, SG_RESTART_EXIT_CODE) or replace the process with the
// plan returned (exec).
func (in *Instance) exitCode(result error) (int, *restartPlan) {
	if plan := in.restartPlan(result); plan != nil {
		if code := in.cfg.restartExit; code != 0 {
			in.log.Info("restarting: exiting for the supervisor", "code", code)
			return code, nil
		}
		in.log.Info("restarting: replacing the process")
		return ExitFailed, plan
	}
	if result != nil {
		return ExitFailed, nil
	}
	return ExitOK, nil
}

// restartPlan is what MainContext does after a restart op stopped the instance.
type restartPlan struct {
	instance    string
	traceparent string
	notBefore   string // EnvRestartNotBefore; "" without a control-ops daemon
	nonces      string // EnvRestartNonces
	log         *slog.Logger
}

// restartPlan returns how the process restarts, or nil when it does not (no
// restart op, or the shutdown failed).
func (in *Instance) restartPlan(result error) *restartPlan {
	in.mu.Lock()
	reason, sc := in.reason, in.restartSpan
	in.mu.Unlock()
	if result != nil || reason != restartAsked {
		return nil
	}
	p := &restartPlan{instance: in.cfg.instance, log: in.log}
	if in.control != nil {
		h := in.control.HandOver()
		p.notBefore = strconv.FormatInt(h.NotBefore.UnixMilli(), 10)
		p.nonces = controlops.FormatNonces(h.Nonces)
	}
	if sc.IsValid() {
		carrier := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), carrier)
		p.traceparent = carrier.Get("traceparent")
	}
	return p
}

// exec replaces the process with a fresh copy of the same executable, with the
// same arguments and environment, SG_INSTANCE_ID set to the instance id,
// SG_RESTART_TRACEPARENT to the restart's trace, and SG_RESTART_NOT_BEFORE and
// SG_RESTART_NONCES to the control-ops hand-over. It returns only on failure.
func (p *restartPlan) exec() error {
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("restart: locating the executable: %w", err)
	}
	env := replaceEnv(os.Environ(), EnvInstanceID, p.instance)
	env = replaceEnv(env, EnvRestartTraceparent, p.traceparent)
	env = replaceEnv(env, EnvRestartNotBefore, p.notBefore)
	env = replaceEnv(env, EnvRestartNonces, p.nonces)
	if err := syscall.Exec(bin, os.Args, env); err != nil {
		return fmt.Errorf("restart: exec %s: %w", bin, err)
	}
	return nil
}

func replaceEnv(env []string, name, value string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	if value != "" {
		out = append(out, name+"="+value)
	}
	return out
}

// restartEnv reads SG_RESTART_EXIT_CODE, SG_RESTART_TRACEPARENT and the
// control-ops hand-over (SG_RESTART_NOT_BEFORE, SG_RESTART_NONCES) into cfg.
func restartEnv(cfg *config) error {
	if c := cfg.restartExit; c != 0 && (c < 3 || c > 125) {
		return &ConfigError{Name: "WithRestartExit", Value: strconv.Itoa(c), Err: errors.New("want an exit code 3-125, e.g. 3 (0-2 mean stopped, failed, bad configuration)")}
	}
	if v := cfg.getenv(EnvRestartExitCode); v != "" {
		code, err := strconv.Atoi(v)
		if err != nil || code < 3 || code > 125 {
			// 0, 1 and 2 already mean stopped, failed and bad configuration.
			return &ConfigError{Name: EnvRestartExitCode, Value: v, Err: errors.New("want an exit code 3-125, e.g. 3 (0-2 mean stopped, failed, bad configuration)")}
		}
		cfg.restartExit = code
	}
	if v := cfg.getenv(EnvRestartTraceparent); v != "" {
		ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": v})
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			cfg.bootLinks = append(cfg.bootLinks, trace.Link{SpanContext: sc})
		}
	}
	nb, nonces := cfg.getenv(EnvRestartNotBefore), cfg.getenv(EnvRestartNonces)
	if nb == "" {
		if nonces != "" {
			return &ConfigError{Name: EnvRestartNonces, Value: shorten(nonces), Err: fmt.Errorf("set without %s (both are set by the library across a restart)", EnvRestartNotBefore)}
		}
		return nil
	}
	ms, err := strconv.ParseInt(nb, 10, 64)
	if err != nil || ms <= 0 || ms > 1e14 {
		return &ConfigError{Name: EnvRestartNotBefore, Value: nb, Err: errors.New("want unix milliseconds (set by the library across a restart)")}
	}
	ns, err := controlops.ParseNonces(nonces)
	if err != nil {
		return &ConfigError{Name: EnvRestartNonces, Value: shorten(nonces), Err: err}
	}
	cfg.controlHandOver = &controlops.HandOver{NotBefore: time.UnixMilli(ms), Nonces: ns}
	return nil
}

// shorten cuts a long value for an error message.
func shorten(v string) string {
	if len(v) > 64 {
		return v[:64] + "..."
	}
	return v
}
