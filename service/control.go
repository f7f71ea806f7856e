package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/phases"
	"go.opentelemetry.io/otel/trace"
)

// WithControlKeys sets the keys of the control channel (SG_CONTROL_KEY in
// Main, which overrides it): the instance executes only ops signed with one
// of them, and results name the key by its controlops.KeyID. Each key is at
// least controlops.MinKeyLen bytes (New refuses shorter ones); a key of fewer
// than controlops.MinKeyBits bits (controlops.KeyBits) warns at boot, naming
// the variable or the option and the key's id. Without a key,
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
// instance is running or draining (and is rejected in any other state),
// without a state change. The names restart, pull, drain and undrain are the
// lifecycle's; names must match [a-z0-9][a-z0-9._-]* (New refuses others). A
// nil h is ignored.
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

// setupControl builds the control-ops daemon when the instance has Redis: it
// starts at the end of phase 8 (8.5) and stops first, in S1.
func (in *Instance) setupControl() error {
	for name := range in.cfg.ops {
		if lifecycleOp(name) || fleetenv.ValidateOp(name) != nil {
			return &ConfigError{Name: "WithOperation name", Value: name, Err: errors.New("want [a-z0-9][a-z0-9._-]*, not restart, pull, drain or undrain")}
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
	return nil
}

// lifecycleOp reports whether name is one of the lifecycle's own ops.
func lifecycleOp(name string) bool {
	switch name {
	case controlops.OpRestart, controlops.OpPull, controlops.OpDrain, controlops.OpUndrain:
		return true
	}
	return false
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

// controlTransition tells the daemon when the boot is over (a boot phase
// led to a serving state), so a restart handed over by the previous process
// completes.
func (in *Instance) controlTransition(_ context.Context, t lifecycle.Transition) {
	if in.control != nil && t.Phase.Role == phases.RoleServing && in.table.Role(t.From) == phases.RoleWorking {
		in.control.Running()
	}
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
		if err := in.restart(trace.SpanContextFromContext(ctx)); err != nil {
			return fmt.Errorf("%w: %w", controlops.ErrInvalidState, err)
		}
		return nil
	case controlops.OpPull:
		h := in.cfg.pullHandler
		if h == nil {
			return fmt.Errorf("%w: pull: no pull handler registered (service.WithPullHandler)", controlops.ErrUnknownOp)
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
	case controlops.OpDrain, controlops.OpUndrain:
		do := in.Drain
		if op == controlops.OpUndrain {
			do = in.Undrain
		}
		if err := do(ctx); err != nil {
			return fmt.Errorf("%w: %w", controlops.ErrInvalidState, err)
		}
		return nil
	}
	h, ok := in.cfg.ops[op]
	if !ok {
		return fmt.Errorf("%w: %q", controlops.ErrUnknownOp, op)
	}
	if s := in.m.Current(); !at(in.table.Role(s), phases.RoleServing, phases.RoleDraining) {
		return fmt.Errorf("%w: %q in state %q", controlops.ErrInvalidState, op, s)
	}
	return in.safe(ctx, "operation "+op, func(ctx context.Context) error { return h(ctx, args) })
}

// Restartable reports whether a restart may begin now: the instance's state
// is at work (serving, or drained by an operator) and no stop was asked for.
func (t controlTarget) Restartable() bool {
	in := t.in
	in.mu.Lock()
	defer in.mu.Unlock()
	cur := in.m.Current()
	_, _, _, err := decide(in.stage, in.reason, reqRestart, conditions{role: in.table.Role(cur), restart: len(in.table.Alternatives(phases.Restart, cur)) > 0})
	return err == nil
}

// at reports whether r is one of roles.
func at(r phases.Role, roles ...phases.Role) bool { return slices.Contains(roles, r) }
