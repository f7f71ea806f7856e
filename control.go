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
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
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
	// EnvRestartNotBefore is set by a process that restarts with exec for its
	// successor: the control-ops daemon's not-before time (unix ms), so that
	// the ops sent while it restarted are not stale (controlops.HandOver).
	EnvRestartNotBefore = "SG_RESTART_NOT_BEFORE"
	// EnvRestartNonces goes with EnvRestartNotBefore: the nonces of the ops
	// the old process handled that the successor must not accept again
	// (controlops.FormatNonces).
	EnvRestartNonces = "SG_RESTART_NONCES"
)

// WithControlKeys sets the keys of the control channel (SG_CONTROL_KEY in
// Main, which overrides it): the instance executes only ops signed with one
// of them, and results name the key by its controlops.KeyID. Each key is at
// least controlops.MinKeyLen bytes (New refuses shorter ones). Without a key,
// every control op is rejected unless WithControlInsecure(true) is given.
func WithControlKeys(keys ...[]byte) Option {
	return optionFunc(func(c *config) {
		c.controlKeys = nil
		for _, k := range keys {
			c.controlKeys = append(c.controlKeys, append([]byte(nil), k...))
		}
	})
}

// WithControlInsecure(true) makes an instance without a control key accept
// unsigned control ops (SG_CONTROL_INSECURE in Main, which overrides it):
// anyone who can write to Redis can then restart it. The instance logs a
// warning at boot and /healthz warns (check control:auth). With a key it has
// no effect. The demo sets it on its embedded Redis.
func WithControlInsecure(on bool) Option {
	return optionFunc(func(c *config) { c.controlInsecure = on })
}

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
		if name == controlops.OpRestart || name == controlops.OpPull || fleetenv.ValidateOp(name) != nil {
			return &ConfigError{Name: "WithOperation name", Value: name, Err: errors.New("want [a-z0-9][a-z0-9._-]*, not restart or pull")}
		}
	}
	for i, k := range in.cfg.controlKeys {
		if len(k) < controlops.MinKeyLen {
			return &ConfigError{Name: "WithControlKeys", Value: "(redacted)",
				Err: fmt.Errorf("key %d of %d is %d bytes: want at least %d", i+1, len(in.cfg.controlKeys), len(k), controlops.MinKeyLen)}
		}
	}
	if in.cfg.redis == nil {
		return nil
	}
	opts := []controlops.Option{
		controlops.WithClock(in.cfg.clock),
		controlops.WithLogger(in.log),
		controlops.WithTracerProvider(in.cfg.tp),
		controlops.WithCallTimeout(in.cfg.redisTimeout),
		controlops.WithMeterProvider(in.cfg.mp),
		controlops.WithKeys(in.cfg.controlKeys...),
		// Stale: issued before this process started. A process exec'd by a
		// restart continues from its predecessor's time instead.
		controlops.WithNotBefore(in.started),
	}
	if in.cfg.controlInsecure {
		opts = append(opts, controlops.WithInsecure())
	}
	if h := in.cfg.controlHandOver; h != nil {
		opts = append(opts, controlops.WithHandOver(*h))
	}
	d, err := controlops.New(in.cfg.redis, controlTarget{in}, opts...)
	if err != nil {
		return err
	}
	in.control = d
	in.cfg.extras = append(in.cfg.extras, d)
	return nil
}

// ControlCheck is the /healthz check that says what the control channel
// accepts: it warns in insecure mode, and passes, saying so, when ops must be
// signed or are disabled.
const ControlCheck = "control:auth"

// controlHealthOptions adds the non-required control:auth check.
func (in *Instance) controlHealthOptions() []health.Option {
	if in.control == nil {
		return nil
	}
	var note string
	switch in.control.Mode() {
	case controlops.ModeInsecure:
		return []health.Option{health.WithCheck(ControlCheck, func(context.Context) error {
			return errors.New("unsigned control ops accepted (SG_CONTROL_INSECURE=true): anyone who can write to Redis can restart this instance")
		})}
	case controlops.ModeSigned:
		note = "signed control ops only (key ids " + strings.Join(controlops.KeyIDs(in.cfg.controlKeys), ", ") + ")"
	default:
		note = "control ops disabled: every op is rejected (set SG_CONTROL_KEY, or SG_CONTROL_INSECURE=true)"
	}
	return []health.Option{health.WithCheck(ControlCheck, func(context.Context) error { return nil }, health.PassOutput(note))}
}

// controlMode is the registry entry's control field: signed, insecure or
// disabled ("" without Redis, when there is no entry).
func (in *Instance) controlMode() string {
	if in.control == nil {
		return ""
	}
	return string(in.control.Mode())
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
	notBefore   string // EnvRestartNotBefore; "" without a control-ops daemon
	nonces      string // EnvRestartNonces
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

func (in *Instance) restartSpanContext() trace.SpanContext {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.restartSpan
}
