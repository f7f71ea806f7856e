package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/phases"
)

// ExitRestart is the default exit code of a restart when the process leaves it
// to a supervisor (WithRestartExit, SG_RESTART_EXIT_CODE) instead of replacing
// itself.
const ExitRestart = 3

// Environment variables of the restart hand-over.
const (
	// EnvRestartExitCode, when set (1-125), makes a restart exit with that code
	// for a supervisor to start the process again, instead of exec.
	EnvRestartExitCode = "SG_RESTART_EXIT_CODE"
	// EnvRestartTraceparent is set by a restarting process for its successor:
	// the new boot trace is linked to the restart op's trace.
	EnvRestartTraceparent = "SG_RESTART_TRACEPARENT"
)

// OpHandler runs a control op with its JSON arguments (possibly empty). Its
// context carries the op's trace and ends when the instance shuts down.
type OpHandler func(ctx context.Context, args json.RawMessage) error

// WithPullHandler sets what a pull op does: the instance goes running ->
// pulling, h runs, and the instance goes back to running whatever h returns;
// an error is reported as the op's failed result. Without a handler, pull ops
// are rejected. A nil h is ignored.
func WithPullHandler(h OpHandler) Option {
	return optionFunc(func(c *config) {
		if h != nil {
			c.pullHandler = h
		}
	})
}

// WithOperation registers a service's own control op: it runs h while the
// instance is running (and is rejected in any other state), without a state
// change. The names restart and pull are the lifecycle's; names must match
// [a-z0-9][a-z0-9._-]* (New refuses others). A nil h is ignored.
func WithOperation(name string, h OpHandler) Option {
	return optionFunc(func(c *config) {
		if h == nil {
			return
		}
		if c.ops == nil {
			c.ops = map[string]OpHandler{}
		}
		c.ops[name] = h
	})
}

// WithRestartExit makes a restart op end MainContext with code (e.g.
// ExitRestart) once the instance is stopped, for a supervisor to start the
// process again, instead of replacing the process with exec. A supervisor must
// keep SG_INSTANCE_ID for the new process to finish the restart (release its
// slot, report done).
func WithRestartExit(code int) Option {
	return optionFunc(func(c *config) { c.restartExit = code })
}

// setupControl builds the control-ops daemon when the instance has Redis. It
// is the last extra: started at 8.5 after the others, stopped first in S1.
func (in *Instance) setupControl() error {
	for name := range in.cfg.ops {
		if name == controlops.OpRestart || name == controlops.OpPull || len(name) > controlops.MaxOpLen ||
			!validOpName(name) {
			return &ConfigError{Name: "WithOperation name", Value: name, Err: errors.New("want [a-z0-9][a-z0-9._-]*, not restart or pull")}
		}
	}
	if in.cfg.redis == nil {
		return nil
	}
	opts := []controlops.Option{
		controlops.WithClock(in.cfg.clock),
		controlops.WithLogger(in.log),
		controlops.WithTracerProvider(in.cfg.tp),
	}
	if in.cfg.controlKey != "" {
		opts = append(opts, controlops.WithKey([]byte(in.cfg.controlKey)))
	} else {
		opts = append(opts, controlops.WithInsecure())
	}
	d, err := controlops.New(in.cfg.redis, controlTarget{in}, opts...)
	if err != nil {
		return err
	}
	in.control = d
	in.cfg.extras = append(in.cfg.extras, d)
	return nil
}

func validOpName(s string) bool {
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= '0' && s[0] <= '9') {
		return false
	}
	return strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789._-") == ""
}

// controlHealthOptions adds the non-required control:auth check: it warns when
// unsigned control ops are accepted.
func (in *Instance) controlHealthOptions() []health.Option {
	if in.cfg.redis == nil || in.cfg.controlKey != "" {
		return nil
	}
	return []health.Option{health.WithCheck("control:auth", func(context.Context) error {
		return errors.New("unsigned control ops accepted (SG_CONTROL_KEY is not set)")
	})}
}

// controlTransition tells the daemon when the instance reached running, so a
// restart handed over by the previous process completes.
func (in *Instance) controlTransition(_ context.Context, t Transition) {
	if in.control != nil && t.To == phases.Running && t.Event == phases.HealthServing {
		in.control.Running()
	}
}

// requestRestartFrom is RequestRestart for a control op: the shutdown joins the
// op's trace, and the next process's boot is linked to it.
func (in *Instance) requestRestartFrom(ctx context.Context) error {
	in.mu.Lock()
	in.restartSpan = trace.SpanContextFromContext(ctx)
	in.mu.Unlock()
	return in.RequestRestart()
}

// controlTarget adapts an Instance to controlops.Target.
type controlTarget struct{ in *Instance }

func (t controlTarget) Service() string  { return t.in.cfg.name }
func (t controlTarget) Instance() string { return t.in.cfg.instance }
func (t controlTarget) State() string    { return string(t.in.m.Current()) }

func (t controlTarget) Do(ctx context.Context, op string, args json.RawMessage) error {
	in := t.in
	switch op {
	case controlops.OpRestart:
		if err := in.requestRestartFrom(ctx); err != nil {
			return fmt.Errorf("%w: %w", controlops.ErrInvalidState, err)
		}
		return nil
	case controlops.OpPull:
		h := in.cfg.pullHandler
		if h == nil {
			return fmt.Errorf("%w: pull: no pull handler registered (lifecycle.WithPullHandler)", controlops.ErrUnknownOp)
		}
		if err := in.m.Fire(ctx, phases.Pull); err != nil {
			return fmt.Errorf("%w: %w", controlops.ErrInvalidState, err)
		}
		err := in.safe(ctx, "pull handler", func(ctx context.Context) error { return h(ctx, args) })
		// Back to running even when the handler failed; a stop that arrived
		// meanwhile already left pulling, and then this is refused.
		if ferr := in.m.Fire(ctx, phases.PullDone); ferr != nil {
			in.log.Warn("pull finished after the instance left pulling", "state", string(in.m.Current()), "error", ferr)
		}
		if err != nil {
			return fmt.Errorf("pull handler: %w", err)
		}
		return nil
	}
	h, ok := in.cfg.ops[op]
	if !ok {
		return fmt.Errorf("%w: %q", controlops.ErrUnknownOp, op)
	}
	if s := in.m.Current(); s != phases.Running {
		return fmt.Errorf("%w: %q in state %q", controlops.ErrInvalidState, op, s)
	}
	return in.safe(ctx, "operation "+op, func(ctx context.Context) error { return h(ctx, args) })
}

// restartPlan is what MainContext does after a restart op stopped the instance.
type restartPlan struct {
	instance    string
	traceparent string
	log         *slog.Logger
}

// restartPlan returns how the process restarts, or nil when it does not (no
// restart op, or the shutdown failed).
func (in *Instance) restartPlan(result error) *restartPlan {
	if result != nil || !in.Restarting() {
		return nil
	}
	in.mu.Lock()
	sc := in.restartSpan
	in.mu.Unlock()
	p := &restartPlan{instance: in.cfg.instance, log: in.log}
	if sc.IsValid() {
		carrier := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(trace.ContextWithSpanContext(context.Background(), sc), carrier)
		p.traceparent = carrier.Get("traceparent")
	}
	return p
}

// exec replaces the process with a fresh copy of the same executable, with the
// same arguments and environment, SG_INSTANCE_ID set to the instance id and
// SG_RESTART_TRACEPARENT to the restart's trace. It returns only on failure.
func (p *restartPlan) exec() error {
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("restart: locating the executable: %w", err)
	}
	env := replaceEnv(os.Environ(), EnvInstanceID, p.instance)
	env = replaceEnv(env, EnvRestartTraceparent, p.traceparent)
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

// restartEnv reads SG_RESTART_EXIT_CODE and SG_RESTART_TRACEPARENT into cfg.
func restartEnv(cfg *config) error {
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
	return nil
}

func (in *Instance) restartSpanContext() trace.SpanContext {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.restartSpan
}
