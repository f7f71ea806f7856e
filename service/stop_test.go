package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// A stop asked for in any phase, from many goroutines at once, or before
// the boot: each ends in one clean shutdown.

func TestStopInEveryBootPhaseEndsStopped(t *testing.T) {
	for _, s := range append(append([]phases.State{}, phases.Lifecycle().StatesIn(phases.GroupBoot)...), phases.Running) {
		t.Run(string(s), func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // after the fixture's cleanups
			f := newFixture(t)
			svc := newTestService()
			var in *Instance
			// Ask for the stop the moment the machine enters s: the phase's work
			// then sees a cancelled context.
			stopper := lifecycle.ObserverFunc(func(_ context.Context, tr lifecycle.Transition) {
				if tr.To == s {
					in.RequestStop()
				}
			})
			var err error
			in, err = New(svc, f.options(WithTransitionObserver(stopper))...)
			if err != nil {
				t.Fatal(err)
			}
			if s == phases.Init {
				in.RequestStop()
			}
			err = in.Run(context.Background())
			if err != nil {
				t.Fatalf("Run = %v, want nil (a clean stop)", err)
			}
			path := f.rec.path()
			if last := path[len(path)-1]; last != phases.Stopped {
				t.Fatalf("ended in %q, want stopped: %v", last, path)
			}
			if svc.called("OnStart") != (svc.onStop.Load() == 1) {
				t.Errorf("OnStart called %v but OnStop called %d times", svc.called("OnStart"), svc.onStop.Load())
			}
		})
	}
}

func TestStopCancelsABlockedPhase(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // after the fixture's cleanups
	f := newFixture(t)
	svc := newTestService()
	svc.blockIn = phases.BuildingAdapters
	in, err := New(svc, f.options()...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	<-svc.blocked
	if err := in.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if err := wait(t, done); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if in.State() != phases.Stopped || svc.onStop.Load() != 0 {
		t.Fatalf("state %q, OnStop calls %d; want stopped, 0", in.State(), svc.onStop.Load())
	}
}

func TestStopDuringJitterEndsStopped(t *testing.T) {
	f := newFixture(t)
	in, err := New(newTestService(), f.options(WithBootJitter(time.Hour))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	if err := f.clock.BlockUntilContext(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if in.State() != phases.Connecting {
		t.Fatalf("state %q while waiting, want connecting", in.State())
	}
	in.RequestStop()
	if err := wait(t, done); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if in.State() != phases.Stopped {
		t.Fatalf("state %q, want stopped", in.State())
	}
}

func TestReadinessIs503FromTheFirstShutdownState(t *testing.T) {
	f := newFixture(t)
	var in *Instance
	codesSeen := map[phases.State]int{}
	probedRunning := make(chan struct{})
	probe := lifecycle.ObserverFunc(func(_ context.Context, tr lifecycle.Transition) {
		if tr.To != phases.Running && tr.To != phases.StoppingDaemons && tr.To != phases.StoppingHealth {
			return
		}
		resp, err := http.Get("http://" + in.HealthAddr() + "/readyz")
		if err != nil {
			t.Errorf("GET /readyz in %s: %v", tr.To, err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		codesSeen[tr.To] = resp.StatusCode
		t.Logf("readyz in %s: %d %s", tr.To, resp.StatusCode, body)
		if tr.To == phases.Running {
			close(probedRunning)
		}
	})
	var err error
	in, err = New(newTestService(), f.options(WithTransitionObserver(probe))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	<-probedRunning
	if err := in.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	want := map[phases.State]int{phases.Running: 200, phases.StoppingDaemons: 503, phases.StoppingHealth: 503}
	if fmt.Sprint(codesSeen) != fmt.Sprint(want) {
		t.Fatalf("readyz codes %v, want %v", codesSeen, want)
	}
}

func TestManyGoroutinesShuttingDownAndFiringGetOneShutdown(t *testing.T) {
	f := newFixture(t)
	svc := newTestService()
	in, done := f.run(t, svc)

	events := phases.Lifecycle().Events()
	var wg sync.WaitGroup
	results := make([]error, 100)
	start := make(chan struct{})
	for g := 0; g < 100; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			<-start
			if g%2 == 0 {
				results[g] = in.Shutdown(context.Background())
				return
			}
			// Every way in from outside: stop and restart requests, and the
			// control events a pull op fires.
			switch ev := events[g%len(events)]; ev {
			case phases.Stop:
				in.RequestStop()
			case phases.Restart:
				_ = in.RequestRestart()
			case phases.Pull, phases.PullDone:
				_ = in.m.Fire(context.Background(), ev)
			}
		}(g)
	}
	close(start)
	wg.Wait()
	if err := wait(t, done); err != nil && !errors.Is(err, lifecycle.ErrInvalidEvent) {
		t.Logf("Run = %v (stray events may fail the run; what matters is one shutdown)", err)
	}
	for g := 0; g < 100; g += 2 {
		if results[g] != results[0] {
			t.Fatalf("Shutdown results differ: %v vs %v", results[g], results[0])
		}
	}
	if n := svc.onStop.Load(); n != 1 {
		t.Fatalf("OnStop called %d times, want 1", n)
	}
	roots := 0
	for _, s := range f.spans.Ended() {
		if s.Name() == lifecycle.SpanShutdown {
			roots++
		}
	}
	if roots != 1 {
		t.Fatalf("%d shutdown traces, want 1", roots)
	}
	if st := in.State(); st != phases.Stopped && st != phases.Failed {
		t.Fatalf("state %q, want a terminal state", st)
	}
}

func TestShutdownBeforeBootStops(t *testing.T) {
	f := newFixture(t)
	svc := newTestService()
	in, err := New(svc, f.options()...)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := in.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown = %v", err)
	}
	if in.State() != phases.Stopped || svc.onStop.Load() != 0 {
		t.Fatalf("state %q, OnStop %d", in.State(), svc.onStop.Load())
	}
	if err := in.Run(context.Background()); !errors.Is(err, ErrAlreadyStarted) {
		t.Fatalf("Run after Shutdown = %v, want ErrAlreadyStarted", err)
	}
}

// attrOf returns the value of attribute k in kvs.
func attrOf(kvs []attribute.KeyValue, k attribute.Key) (attribute.Value, bool) {
	for _, kv := range kvs {
		if kv.Key == k {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// memberOf returns the instance's registry member, nil before it has one.
func memberOf(in *Instance) *registry.Member {
	m, _ := in.link.member()
	return m
}
