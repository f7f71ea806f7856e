package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/phases"
)

// step is the work of one boot phase or shutdown step: a row of the step
// table beside the transition table of package phases. The driver walks the
// boot states and then the shutdown states of the table and does each one's
// step; nothing else in the package knows what a state does.
type step struct {
	// work is the library's own work in the state. It returns the event that
	// completes the state, or "" for the state's one forward event in the
	// table (phases.NextEvent). An error with no event fails the phase; an
	// error with an event is the cause that event carries (ping_failed). In
	// a state with service work too, it runs first; the service's runs only
	// if it returned neither.
	work func(in *Instance, ctx context.Context) (phases.Event, error)

	// service returns the Service's own work in a boot state
	// (LocalConfigurer.ConfigureLocal, Configurer.Configure, ...,
	// Service.OnStart), or nil when it has none.
	// A state with a service func takes the hooks given with WithHook; they
	// run after it.
	service func(Service) Hook

	// undoes names the boot state whose work a shutdown step undoes. The
	// step runs only if that state's work began (the driver records it), and,
	// when started is set, if started also says there is something to undo;
	// otherwise it is skipped (lifecycle.skipped on its span).
	undoes  phases.State
	started func(in *Instance) bool

	// failsTheStop says that an error of this shutdown step makes the stop
	// unclean: the instance ends in failed. Other steps' errors are warnings.
	failsTheStop bool
}

// lifecycleSteps is the step table of phases.Lifecycle. Adding a boot phase
// is a row in phases and a row here (see docs/diagrams.md).
var lifecycleSteps = map[phases.State]step{
	// New did most of phase 1's own work; the rest, and the Service's, is
	// done as the boot begins.
	phases.Init:             {work: (*Instance).initialise, service: optional(LocalConfigurer.ConfigureLocal)},
	phases.Connecting:       {work: (*Instance).connect},
	phases.Configuring:      {service: optional(Configurer.Configure)},
	phases.Instrumenting:    {service: optional(Instrumenter.Instrument)},
	phases.LoadingModules:   {service: optional(ModuleLoader.LoadModules)},
	phases.BuildingAdapters: {service: optional(AdapterBuilder.BuildAdapters)},
	phases.Starting:         {service: func(s Service) Hook { return named("Service.OnStart", s.OnStart) }},
	phases.Registering:      {work: (*Instance).register},
	phases.ServingHealth:    {work: (*Instance).serveHealth},

	phases.StoppingDaemons: {work: (*Instance).stopDaemons, undoes: phases.Registering, failsTheStop: true,
		started: func(in *Instance) bool { return in.link.reg != nil }},
	phases.StoppingHealth: {work: (*Instance).stopHealth, undoes: phases.ServingHealth,
		started: func(in *Instance) bool { return in.health != nil }},
	// The registry entry exists from the first transition after Redis
	// answered the ping, whatever phase the boot reached.
	phases.Deregistering: {work: (*Instance).deregister, undoes: phases.Connecting,
		started: func(in *Instance) bool { _, ok := in.link.member(); return ok }},
	phases.CleaningUp: {work: (*Instance).cleanUp, undoes: phases.Starting, failsTheStop: true},
}

// optional returns the Service's method m of the optional interface T, or nil
// when the Service does not implement T.
func optional[T any](m func(T, context.Context) error) func(Service) Hook {
	return func(s Service) Hook {
		if t, ok := s.(T); ok {
			return func(ctx context.Context) error { return m(t, ctx) }
		}
		return nil
	}
}

// named wraps h's errors with the name of the method it is.
func named(name string, h Hook) Hook {
	return func(ctx context.Context) error {
		if err := h(ctx); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
}

// checkSteps reports the first mismatch between a lifecycle table and its
// step table: a boot or shutdown state without a step, a step for a state
// the table lacks, a shutdown step that undoes no boot state, or a state
// whose completing event is not in the table.
func checkSteps(t *phases.Table, steps map[phases.State]step) error {
	boot, shutdown := t.StatesIn(phases.GroupBoot), t.StatesIn(phases.GroupShutdown)
	for _, s := range append(slices.Clone(boot), shutdown...) {
		st, ok := steps[s]
		if !ok {
			return fmt.Errorf("lifecycle: state %q of table %q has no step", s, t.Name)
		}
		if slices.Contains(shutdown, s) && !slices.Contains(boot, st.undoes) {
			return fmt.Errorf("lifecycle: shutdown step %q undoes %q, not a boot state of table %q", s, st.undoes, t.Name)
		}
		if _, ok := phases.NextEvent(t, s); !ok && st.work == nil {
			return fmt.Errorf("lifecycle: state %q of table %q has no one event that completes it, and its step names none", s, t.Name)
		}
	}
	for s := range steps {
		if !slices.Contains(boot, s) && !slices.Contains(shutdown, s) {
			return fmt.Errorf("lifecycle: step for state %q, which is not a boot or shutdown state of table %q", s, t.Name)
		}
	}
	return nil
}

// doStep does the work of state s: the library's own, or the Service's and
// the hooks'. It returns the event that completes s (see step.work).
func (in *Instance) doStep(ctx context.Context, s phases.State) (phases.Event, error) {
	st := in.steps[s]
	if st.work != nil {
		if ev, err := st.work(in, ctx); ev != "" || err != nil || st.service == nil {
			return ev, err
		}
	}
	if st.service != nil {
		if h := st.service(in.svc); h != nil {
			if err := h(ctx); err != nil {
				return "", err
			}
		}
		for _, h := range in.cfg.hooks[s] {
			if err := h(ctx); err != nil {
				return "", err
			}
		}
	}
	return "", nil
}

// hookable reports whether boot state s takes WithHook hooks.
func (in *Instance) hookable(s phases.State) bool {
	return slices.Contains(in.table.StatesIn(phases.GroupBoot), s) && in.steps[s].service != nil
}

// shutdownStarted reports whether shutdown step s has anything to undo.
func (in *Instance) shutdownStarted(s phases.State) bool {
	st := in.steps[s]
	in.mu.Lock()
	began := in.begun[st.undoes]
	in.mu.Unlock()
	return began && (st.started == nil || st.started(in))
}

// connect is phase 2's work: jitter, then PING; it returns the ping's
// outcome, ping_failed with its error as the event's cause.
func (in *Instance) connect(ctx context.Context) (phases.Event, error) {
	if in.cfg.redis == nil {
		return phases.PingSkipped, nil
	}
	if in.cfg.jitter > 0 {
		d := time.Duration(in.cfg.rand() * float64(in.cfg.jitter+1))
		in.log.Info("boot jitter", "sleep", d)
		t := in.cfg.clock.NewTimer(d)
		select {
		case <-t.Chan():
		case <-ctx.Done():
			t.Stop()
			return "", ctx.Err()
		}
	}
	pctx, cancel := context.WithTimeout(ctx, in.cfg.redisTimeout)
	err := in.cfg.redis.Ping(pctx).Err()
	cancel()
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	if err == nil {
		in.log.Info("redis connection verified", "redis", in.redisAddr)
		return phases.PingOK, in.link.attach(in.entry(phases.Connecting))
	}
	err = in.redisError(redisacl.Explain(err, redisacl.Instance, redisacl.Call{Cmd: "PING"}))
	if in.cfg.redisRequired {
		in.log.Error("redis connection failed: hard-fail gate triggered, redis is required", "redis", in.redisAddr, "error", err)
		// Nothing is written: the instance never reached Redis.
		in.link.drop()
		return phases.PingFailed, fmt.Errorf("%w: %w", ErrRedisUnavailable, err)
	}
	in.log.Warn("redis connection failed: continuing degraded, redis is not required", "redis", in.redisAddr, "error", err)
	in.degraded.Store(true)
	// The writer delivers the held and later updates once Redis answers.
	if err := in.link.attach(in.entry(phases.Connecting)); err != nil {
		return "", err
	}
	return phases.PingFailed, err
}

// redisError says which Redis failed, and, when it did not answer, within
// which deadline.
func (in *Instance) redisError(err error) error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("redis at %s did not answer within %s: %w", in.redisAddr, in.cfg.redisTimeout, err)
	}
	return fmt.Errorf("redis at %s: %w", in.redisAddr, err)
}

// register is phase 8's work: complete the registry entry, then (8.5) start
// the heartbeat and the control-ops daemon.
//
// With Redis required, a registration that fails or does not finish within the
// Redis timeout fails the boot. Without, it is left to the registry's writer and
// heartbeat, which register once Redis answers, and the instance goes on
// degraded; once it is degraded (the ping failed, or this registration did),
// nothing in the phase waits on Redis.
func (in *Instance) register(ctx context.Context) (phases.Event, error) {
	if err := in.advertise(); err != nil {
		return "", err
	}
	mem, ok := in.link.member()
	if !ok {
		return "", nil // no Redis
	}
	e := in.entry(phases.Registering)
	if in.degraded.Load() {
		mem.RegisterAsync(e)
	} else {
		rctx, cancel := context.WithTimeout(ctx, in.cfg.redisTimeout)
		err := mem.Register(rctx, e)
		cancel()
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if err != nil {
			err = in.redisError(err)
			if in.cfg.redisRequired {
				return "", fmt.Errorf("registry: %w", err)
			}
			in.log.Warn("registration failed: continuing degraded, redis is not required; the entry is written once redis answers", "redis", in.redisAddr, "error", err)
			in.degraded.Store(true)
		}
	}
	mem.StartHeartbeat()
	if in.control == nil {
		return "", nil
	}
	// The daemon resolves its stream position at Start: bounded like any
	// Redis call, and not waited for at all once Redis is known to be silent
	// (it resolves it in the background).
	var cctx context.Context
	var cancel context.CancelFunc
	if in.degraded.Load() {
		cctx, cancel = context.WithCancel(ctx)
		cancel()
	} else {
		cctx, cancel = context.WithTimeout(ctx, in.cfg.redisTimeout)
	}
	err := in.control.Start(cctx)
	cancel()
	if errors.Is(err, controlops.ErrNoPermission) && !in.cfg.redisRequired {
		// The daemon runs and retries: it reads once the user has the rule.
		in.log.Warn("control-ops daemon: redis refused its reads or writes: continuing degraded, redis is not required; no control op is read until the redis user is given the rule",
			"redis", in.redisAddr, "error", err)
		in.degraded.Store(true)
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("phase 8.5: %w", in.redisError(err))
	}
	return "", nil
}

// advertise decides the address the registry entry advertises, at phase 8:
// the configured one, else the Service's (Advertiser), read once now that
// OnStart has returned.
func (in *Instance) advertise() error {
	addr := in.cfg.advertiseAddr
	if adv, ok := in.svc.(Advertiser); ok && addr == "" {
		addr = adv.AdvertiseAddr()
		if addr != "" {
			if err := fleetenv.ValidateAdvertiseAddr(addr); err != nil {
				return fmt.Errorf("Advertiser.AdvertiseAddr returned %q: %w", addr, err)
			}
		}
	}
	if addr != "" {
		in.advertised.Store(&addr)
		if in.link.reg != nil {
			in.log.Info("advertising an address to clients in the registry", "addr", addr)
		}
	}
	return nil
}

// serveHealth is phase 9's work: the health server binds and serves. An
// address it cannot bind is a *ConfigError (healthListenError), as at init.
func (in *Instance) serveHealth(ctx context.Context) (phases.Event, error) {
	if in.health == nil {
		return "", nil
	}
	if err := in.health.Start(ctx); err != nil {
		return "", in.healthListenError(err)
	}
	return "", nil
}

// stopDaemons is step S1's work: the control-ops daemon and the heartbeat
// are cancelled and awaited.
func (in *Instance) stopDaemons(ctx context.Context) (phases.Event, error) {
	var err error
	if in.control != nil {
		cctx, cancel := context.WithTimeout(ctx, in.cfg.redisTimeout)
		err = in.control.Stop(cctx)
		cancel()
	}
	if mem, ok := in.link.member(); ok {
		mem.StopHeartbeat()
	}
	return "", err
}

// stopHealth is step S2's work: the health server stops.
func (in *Instance) stopHealth(ctx context.Context) (phases.Event, error) {
	return "", in.health.Shutdown(ctx)
}

// deregister is step S3's work: the registry entry is removed, within one
// Redis deadline.
func (in *Instance) deregister(ctx context.Context) (phases.Event, error) {
	mem, ok := in.link.member()
	if !ok {
		return "", nil
	}
	dctx, cancel := context.WithTimeout(ctx, in.cfg.redisTimeout)
	defer cancel()
	if err := mem.Deregister(dctx); err != nil {
		// Redis did not answer within its deadline: give up on the status
		// updates now rather than after cleaning_up, so that the writer
		// starts no new write that the end of the shutdown would wait for.
		cancel()
		in.giveUpUpdates()
		return "", fmt.Errorf("%w; the entry expires by its TTL (%s)", in.redisError(err), in.cfg.ttl)
	}
	return "", nil
}

// cleanUp is step S4's work: Service.OnStop.
func (in *Instance) cleanUp(ctx context.Context) (phases.Event, error) {
	if err := in.svc.OnStop(ctx); err != nil {
		return "", fmt.Errorf("Service.OnStop: %w", err)
	}
	return "", nil
}
