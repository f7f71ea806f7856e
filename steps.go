package lifecycle

import (
	"context"
	"fmt"
	"slices"

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
	// error with an event is the cause that event carries (ping_failed).
	work func(in *Instance, ctx context.Context) (phases.Event, error)

	// service returns the Service's own work in a boot state
	// (Configurer.Configure, ..., Service.OnStart), or nil when it has none.
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
	phases.Init:             {}, // New did phase 1's work
	phases.Connecting:       {work: (*Instance).connect},
	phases.Configuring:      {service: optional(Configurer.Configure)},
	phases.Instrumenting:    {service: optional(Instrumenter.Instrument)},
	phases.LoadingModules:   {service: optional(ModuleLoader.LoadModules)},
	phases.BuildingAdapters: {service: optional(AdapterBuilder.BuildAdapters)},
	phases.Starting:         {service: func(s Service) Hook { return named("Service.OnStart", s.OnStart) }},
	phases.Registering:      {work: (*Instance).register},
	phases.ServingHealth:    {work: (*Instance).serveHealth},

	phases.StoppingDaemons: {work: (*Instance).stopDaemons, undoes: phases.Registering, failsTheStop: true,
		started: func(in *Instance) bool { return in.reg != nil }},
	phases.StoppingHealth: {work: (*Instance).stopHealth, undoes: phases.ServingHealth,
		started: func(in *Instance) bool { return in.health != nil }},
	// The registry entry exists from the first transition after Redis
	// answered the ping, whatever phase the boot reached.
	phases.Deregistering: {work: (*Instance).deregister, undoes: phases.Connecting,
		started: func(in *Instance) bool { return in.member.Load() != nil }},
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
		return st.work(in, ctx)
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
	return slices.Contains(in.bootStates, s) && in.steps[s].service != nil
}

// shutdownStarted reports whether shutdown step s has anything to undo.
func (in *Instance) shutdownStarted(s phases.State) bool {
	st := in.steps[s]
	in.mu.Lock()
	began := in.begun[st.undoes]
	in.mu.Unlock()
	return began && (st.started == nil || st.started(in))
}
