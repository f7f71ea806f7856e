package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/service"
)

// knobs are the demo's own settings.
type knobs struct {
	delays map[phases.State]time.Duration
	fail   phases.State
	hang   phases.State
}

// Environment variables of the demo.
const (
	envPhaseDelay = "DEMO_PHASE_DELAY"
	envFailPhase  = "DEMO_FAIL_PHASE"
	envHangPhase  = "DEMO_HANG_PHASE"
)

// hangStates are the boot phases DEMO_HANG_PHASE can hang.
var hangStates = []phases.State{
	phases.Configuring, phases.Instrumenting, phases.LoadingModules, phases.BuildingAdapters, phases.Starting,
}

// workStates are the states whose work the demo does itself, so it can slow it
// down or fail it.
var workStates = []phases.State{
	phases.Configuring, phases.Instrumenting, phases.LoadingModules, phases.BuildingAdapters,
	phases.Starting, phases.Running, phases.CleaningUp,
}

func isWorkState(s phases.State) bool {
	for _, w := range workStates {
		if w == s {
			return true
		}
	}
	return false
}

func workStateNames() string {
	names := make([]string, len(workStates))
	for i, s := range workStates {
		names[i] = string(s)
	}
	return strings.Join(names, ", ")
}

// parseKnobs reads DEMO_PHASE_DELAY ("state=duration,...") and DEMO_FAIL_PHASE
// (a state name). Errors name the variable and the bad value.
func parseKnobs(getenv func(string) string) (knobs, error) {
	k := knobs{delays: map[phases.State]time.Duration{}}
	if v := getenv(envPhaseDelay); v != "" {
		for _, item := range strings.Split(v, ",") {
			name, dur, ok := strings.Cut(strings.TrimSpace(item), "=")
			if !ok {
				return k, &service.ConfigError{Name: envPhaseDelay, Value: v, Err: fmt.Errorf("%q: want state=duration, e.g. loading_modules=500ms", item)}
			}
			s := phases.State(name)
			if !isWorkState(s) {
				return k, &service.ConfigError{Name: envPhaseDelay, Value: v, Err: fmt.Errorf("unknown state %q: want one of %s", name, workStateNames())}
			}
			d, err := time.ParseDuration(dur)
			if err != nil || d < 0 {
				return k, &service.ConfigError{Name: envPhaseDelay, Value: v, Err: fmt.Errorf("%q: want a duration >= 0 such as 500ms", dur)}
			}
			k.delays[s] = d
		}
	}
	if v := getenv(envFailPhase); v != "" {
		s := phases.State(v)
		if !isWorkState(s) {
			return k, &service.ConfigError{Name: envFailPhase, Value: v, Err: fmt.Errorf("want one of %s", workStateNames())}
		}
		k.fail = s
	}
	if v := getenv(envHangPhase); v != "" {
		s := phases.State(v)
		if !slices.Contains(hangStates, s) {
			names := make([]string, len(hangStates))
			for i, h := range hangStates {
				names[i] = string(h)
			}
			return k, &service.ConfigError{Name: envHangPhase, Value: v, Err: fmt.Errorf("want one of %s", strings.Join(names, ", "))}
		}
		k.hang = s
	}
	return k, nil
}

// demoService is the demo service: it counts ticks in Redis while it runs.
type demoService struct {
	log    *slog.Logger          // the instance's (Bind): its lines name the service and the instance
	redis  redis.UniversalClient // the instance's (Bind): not the service's to close
	mu     sync.Mutex            // guards knobs: a pull replaces them while the service runs
	knobs  knobs
	ticks  int
	key    string
	period time.Duration
}

func newService(k knobs) *demoService {
	return &demoService{knobs: k, key: "demo:{demo}:ticks", period: time.Second}
}

// Bind takes the instance's logger and Redis client (service.Binder): New
// calls it before any phase.
func (s *demoService) Bind(in *service.Instance) {
	s.log, s.redis = in.Logger(), in.Redis()
}

// work is what every phase of the demo does: wait its configured delay, then fail
// if asked to.
func (s *demoService) work(ctx context.Context, state phases.State, msg string, args ...any) error {
	s.mu.Lock()
	k := s.knobs
	s.mu.Unlock()
	if d := k.delays[state]; d > 0 {
		s.log.Info("demo: slow phase", "state", string(state), "delay", d)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if k.fail == state {
		return fmt.Errorf("demo: %s failed on purpose (%s=%s)", state, envFailPhase, state)
	}
	if k.hang == state {
		// A bug the boot time limits are for: work that ignores its context.
		s.log.Warn("demo: hanging on purpose, ignoring the context", "state", string(state), "knob", envHangPhase)
		select {}
	}
	s.log.Info("demo: "+msg, args...)
	return nil
}

func (s *demoService) Configure(ctx context.Context) error {
	return s.work(ctx, phases.Configuring, "configuration loaded", "tick_period", s.period)
}

func (s *demoService) Instrument(ctx context.Context) error {
	return s.work(ctx, phases.Instrumenting, "instrumentation ready", "tracer", "global")
}

func (s *demoService) LoadModules(ctx context.Context) error {
	return s.work(ctx, phases.LoadingModules, "modules loaded", "modules", "ticker,echo")
}

func (s *demoService) BuildAdapters(ctx context.Context) error {
	return s.work(ctx, phases.BuildingAdapters, "adapters built", "adapters", "redis")
}

func (s *demoService) OnStart(ctx context.Context) error {
	return s.work(ctx, phases.Starting, "worker started", "counter", s.key)
}

// Run counts a tick in Redis every period until it is stopped.
func (s *demoService) Run(ctx context.Context) error {
	if err := s.work(ctx, phases.Running, "running: counting ticks", "counter", s.key); err != nil {
		return err
	}
	t := time.NewTicker(s.period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.log.Info("demo: run context cancelled: the worker stops")
			return nil
		case <-t.C:
			// A short deadline of its own: with Redis frozen, a stop must not
			// wait long for the tick in flight.
			tctx, cancel := context.WithTimeout(ctx, s.period/4)
			n, err := s.redis.Incr(tctx, s.key).Result()
			cancel()
			if err != nil && !errors.Is(err, context.Canceled) {
				s.log.Warn("demo: tick not counted", "error", err)
				continue
			}
			s.ticks++
			s.log.Debug("demo: tick", "total", n)
		}
	}
}

func (s *demoService) OnStop(ctx context.Context) error {
	return s.work(ctx, phases.CleaningUp, "worker stopped", "ticks", s.ticks)
}

// pull is the demo's pull handler: it re-reads its settings (DEMO_PHASE_DELAY,
// DEMO_FAIL_PHASE) through getenv and keeps them; bad settings fail the pull and
// the old ones stay.
func (s *demoService) pull(getenv func(string) string) func(ctx context.Context, args json.RawMessage) error {
	return func(ctx context.Context, args json.RawMessage) error {
		k, err := parseKnobs(getenv)
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.knobs = k
		s.mu.Unlock()
		s.log.Info("demo: settings re-read", "delays", len(k.delays), "fail_phase", string(k.fail), "args", string(args))
		return nil
	}
}
