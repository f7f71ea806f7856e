package service

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/phases"
)

// localService is a testService with configuration that needs no Redis
// (LocalConfigurer): ConfigureLocal returns local, and records the state it
// ran in and how many connections Redis had seen by then.
type localService struct {
	*testService
	local   error
	seen    func() int // connections Redis has accepted
	inState func() phases.State

	mu    sync.Mutex
	state phases.State
	conns int
}

func (s *localService) ConfigureLocal(ctx context.Context) error {
	s.mu.Lock()
	s.state, s.conns = s.inState(), s.seen()
	s.mu.Unlock()
	if err := s.do(ctx, phases.Init, "ConfigureLocal"); err != nil {
		return err
	}
	return s.local
}

// ConfigureLocal and the init hooks run as the boot begins, in init, before
// the jitter and the ping: when they ran Redis had seen no connection, and
// Configure (phase 3) runs after them.
func TestConfigureLocalAndInitHooksRunInInitBeforeRedisIsTouched(t *testing.T) {
	f := newFixture(t)
	var in *Instance
	svc := &localService{testService: newTestService(), seen: func() int { return f.mr.TotalConnectionCount() }, inState: func() phases.State { return in.State() }}
	var hookConns atomic.Int64
	hookConns.Store(-1)
	hook := WithHook(phases.Init, func(context.Context) error {
		hookConns.Store(int64(f.mr.TotalConnectionCount()))
		svc.do(context.Background(), phases.Init, "init hook")
		return nil
	})
	var err error
	if in, err = New(svc, f.options(hook)...); err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	waitState(t, in, phases.Running)
	in.RequestStop()
	if err := wait(t, done); err != nil {
		t.Fatalf("Run = %v", err)
	}
	svc.mu.Lock()
	state, conns := svc.state, svc.conns
	svc.mu.Unlock()
	if state != phases.Init || conns != 0 || hookConns.Load() != 0 {
		t.Errorf("ConfigureLocal ran in %q with %d connections to Redis, the init hook with %d: want init, 0, 0", state, conns, hookConns.Load())
	}
	svc.mu.Lock()
	calls := strings.Join(svc.calls, ",")
	svc.mu.Unlock()
	if !strings.HasPrefix(calls, "ConfigureLocal,init hook,Configure,") {
		t.Errorf("calls %s, want ConfigureLocal, the init hook, then Configure", calls)
	}
	if f.mr.TotalConnectionCount() == 0 {
		t.Error("Redis saw no connection at all: the test shows nothing")
	}
}

// A ConfigError from ConfigureLocal or an init hook fails the boot in init:
// the instance unwinds to failed with the error (errors.Is ErrConfig), and
// neither Redis, Configure nor OnStart was touched.
func TestAConfigErrorInInitFailsTheBootAndTouchesNoRedis(t *testing.T) {
	bad := &ConfigError{Name: "ORDERS_DB_URL", Value: "postgres//db", Err: errors.New("want a URL")}
	for _, tc := range []struct {
		name  string
		local error
		hook  Hook
	}{
		{name: "ConfigureLocal", local: bad},
		{name: "init hook", hook: func(context.Context) error { return bad }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			var in *Instance
			svc := &localService{testService: newTestService(), local: tc.local, seen: func() int { return 0 }, inState: func() phases.State { return in.State() }}
			var err error
			if in, err = New(svc, f.options(WithHook(phases.Init, tc.hook))...); err != nil {
				t.Fatal(err)
			}
			err = wait(t, startRun(t, in))
			var ce *ConfigError
			if !errors.Is(err, ErrConfig) || !errors.As(err, &ce) || ce.Name != "ORDERS_DB_URL" || !strings.Contains(err.Error(), "phase init") {
				t.Fatalf("Run = %v, want the ConfigError naming ORDERS_DB_URL, in phase init", err)
			}
			assertPath(t, f.rec.path(), []phases.State{phases.Init, phases.StoppingDaemons, phases.StoppingHealth, phases.Deregistering, phases.CleaningUp, phases.Failed})
			if svc.called("Configure") || svc.called("OnStart") || svc.onStop.Load() != 0 {
				t.Errorf("calls %v, OnStop %d: want neither Configure, OnStart nor OnStop", svc.calls, svc.onStop.Load())
			}
			if n := f.mr.TotalConnectionCount(); n != 0 {
				t.Errorf("%d connections reached Redis", n)
			}
		})
	}
}

// With Redis down (here: a port that accepts connections and never answers,
// as a frozen Redis does) and an hour of boot jitter on a clock that never
// moves, a ConfigError from ConfigureLocal still ends the boot: it comes
// before both, and nothing connects to Redis.
func TestAConfigErrorInInitEndsTheBootWithRedisDownBeforeTheJitterAndThePing(t *testing.T) {
	frozen := redistest.Silent(t)
	f := newFixture(t)
	client := redis.NewClient(&redis.Options{Addr: frozen.Addr(), DialerRetries: 1, MaxRetries: -1})
	t.Cleanup(func() { client.Close() })
	bad := &ConfigError{Name: "ORDERS_DB_URL", Value: "postgres//db", Err: errors.New("want a URL")}
	svc := &localService{testService: newTestService(), local: bad, seen: frozen.Accepted, inState: func() phases.State { return "" }}
	in, err := New(svc, f.options(WithRedis(client), WithBootJitter(time.Hour), WithRedisTimeout(time.Hour))...)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	done := startRun(t, in)
	if err := wait(t, done); !errors.Is(err, ErrConfig) {
		t.Fatalf("Run = %v, want the ConfigError", err)
	}
	t.Logf("Run returned the ConfigError %v after the boot began", time.Since(start))
	if n := frozen.Accepted(); n != 0 {
		t.Errorf("%d connections reached the Redis address", n)
	}
}
