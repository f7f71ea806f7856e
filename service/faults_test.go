package service

// The fault suite, library side: a real redis-server started by each test,
// frozen (SIGSTOP), thawed (SIGCONT), refused, killed and restarted, and the
// times the lifecycle takes measured with the real clock against the bounds of
// docs/faults.md. The process side (exit codes, SIGTERM) is in cmd/demo.
//
//	go test -run 'Frozen|Refused|RedisKilled|ExpiredContext|PhasePast' -v .

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// faultTimeout is SG_REDIS_TIMEOUT in the fault tests: short, so that the
// bounds (multiples of it) keep the suite quick.
const faultTimeout = time.Second

// deadlineClient is a client configured as the package docs recommend: it
// applies context deadlines to its sockets and dials once per attempt.
func deadlineClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, DialerRetries: 1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// faultRig is an instance of svc/i-1 on a real clock, with its logs and spans.
type faultRig struct {
	logs  *lockedWriter
	spans *tracetest.SpanRecorder
}

func (r *faultRig) options(c redis.UniversalClient, extra ...Option) []Option {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r.spans))
	opts := []Option{
		WithServiceName("svc"),
		WithInstanceID("i-1"),
		WithRedis(c),
		WithRedisTimeout(faultTimeout),
		WithBootJitter(0),
		WithHealthAddr("127.0.0.1:0"),
		WithTracerProvider(tp),
		WithMeterProvider(metricnoop.NewMeterProvider()),
		WithLogger(slog.New(slog.NewTextHandler(r.logs, nil))),
	}
	return append(opts, extra...)
}

func newFaultRig(t *testing.T) *faultRig {
	r := &faultRig{logs: &lockedWriter{b: &bytes.Buffer{}}, spans: tracetest.NewSpanRecorder()}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("instance log:\n%s", r.logs.String())
		}
	})
	return r
}

// shutdownOnCleanup makes sure a test that fails midway still stops in.
func shutdownOnCleanup(t *testing.T, in *Instance) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = in.Shutdown(ctx)
	})
}

// pollUntil polls cond every 10ms until it holds (returning how long that
// took) or fails the test after within.
func pollUntil(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by within
	}
	return time.Since(start)
}

func entryOf(c redis.UniversalClient) (registry.Entry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return registry.New(c).Entry(ctx, "svc", "i-1")
}

func readyz(t *testing.T, in *Instance) int {
	t.Helper()
	resp, err := http.Get("http://" + in.HealthAddr() + "/readyz")
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestFrozenRedisBeforeBootNotRequiredRunsReadyAndRegistersAfterTheThaw(t *testing.T) {
	srv := redistest.Server(t)
	rig := newFaultRig(t)
	in, err := New(newTestService(), rig.options(deadlineClient(t, srv.Addr()), WithRedisRequired(false))...)
	if err != nil {
		t.Fatal(err)
	}
	shutdownOnCleanup(t, in)
	srv.Freeze()

	start := time.Now()
	if err := in.Boot(context.Background()); err != nil {
		t.Fatalf("Boot = %v, want running degraded", err)
	}
	if code := readyz(t, in); code != http.StatusOK {
		t.Fatalf("/readyz = %d in running with Redis frozen and not required, want 200", code)
	}
	took := time.Since(start)
	limit := 2*faultTimeout + time.Second
	t.Logf("Redis frozen, not required: running and ready after %v (bound %v)", took, limit)
	if took > limit {
		t.Fatalf("running and ready after %v, want within %v", took, limit)
	}
	if !in.Degraded() {
		t.Error("instance not marked degraded")
	}

	srv.Thaw()
	reader := deadlineClient(t, srv.Addr())
	took = pollUntil(t, 2*time.Second, "entry registered within 2s of the thaw", func() bool {
		e, err := entryOf(reader)
		return err == nil && e.Status == string(phases.Running) && e.Degraded
	})
	t.Logf("registered (status running, degraded) %v after the thaw (bound 2s)", took)
	if err := in.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRefusedRedisNotRequiredBootsUnder2sAndShutsDownUnder1s(t *testing.T) {
	// A port nothing listens on: every dial is refused at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	rig := newFaultRig(t)
	in, err := New(newTestService(), rig.options(deadlineClient(t, addr), WithRedisRequired(false))...)
	if err != nil {
		t.Fatal(err)
	}
	shutdownOnCleanup(t, in)
	start := time.Now()
	if err := in.Boot(context.Background()); err != nil {
		t.Fatalf("Boot = %v", err)
	}
	boot := time.Since(start)
	start = time.Now()
	if err := in.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown = %v, want a clean stop", err)
	}
	shutdown := time.Since(start)
	t.Logf("Redis refused, not required: Boot %v (bound 2s), Shutdown %v (bound 1s)", boot, shutdown)
	if boot > 2*time.Second || shutdown > time.Second {
		t.Fatalf("Boot %v, Shutdown %v; want under 2s and 1s", boot, shutdown)
	}
}

func TestFrozenRedisAfterThePingGateNotRequiredRunsDegraded(t *testing.T) {
	srv := redistest.Server(t)
	rig := newFaultRig(t)
	// Redis answers the ping, then freezes while the service configures itself.
	freeze := WithHook(phases.Configuring, func(context.Context) error { srv.Freeze(); return nil })
	in, err := New(newTestService(), rig.options(deadlineClient(t, srv.Addr()), WithRedisRequired(false), freeze)...)
	if err != nil {
		t.Fatal(err)
	}
	shutdownOnCleanup(t, in)
	start := time.Now()
	if err := in.Boot(context.Background()); err != nil {
		t.Fatalf("Boot = %v, want running degraded", err)
	}
	took := time.Since(start)
	// One deadline for the registration, one round of health checks (1s).
	limit := faultTimeout + 2*time.Second
	t.Logf("Redis frozen after the ping, not required: running after %v (bound %v)", took, limit)
	if took > limit {
		t.Fatalf("running after %v, want within %v", took, limit)
	}
	if !in.Degraded() || in.State() != phases.Running {
		t.Fatalf("state %s, degraded %v; want running degraded", in.State(), in.Degraded())
	}
	if code := readyz(t, in); code != http.StatusOK {
		t.Fatalf("/readyz = %d, want 200: readiness does not depend on a Redis that is not required", code)
	}
	if !strings.Contains(rig.logs.String(), "registration failed: continuing degraded") {
		t.Error("the log does not say the registration was left to the background")
	}
}

func TestFrozenRedisAfterThePingGateRequiredFailsTheBootNamingRedis(t *testing.T) {
	srv := redistest.Server(t)
	rig := newFaultRig(t)
	svc := newTestService()
	freeze := WithHook(phases.Configuring, func(context.Context) error { srv.Freeze(); return nil })
	in, err := New(svc, rig.options(deadlineClient(t, srv.Addr()), freeze)...)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = in.Run(context.Background())
	took := time.Since(start)
	// The registration's deadline, the deregistration's, and OnStop.
	limit := 2*faultTimeout + time.Second
	t.Logf("Redis frozen after the ping, required: failed after %v (bound %v): %v", took, limit, err)
	if err == nil || !strings.Contains(err.Error(), "redis at "+srv.Addr()) || !strings.Contains(err.Error(), "registering") {
		t.Fatalf("Run = %v, want an error naming the phase, Redis and its address", err)
	}
	if in.State() != phases.Failed || svc.onStop.Load() != 1 {
		t.Fatalf("state %s, OnStop calls %d; want failed, 1", in.State(), svc.onStop.Load())
	}
	if took > limit {
		t.Fatalf("failed after %v, want within %v", took, limit)
	}
}

func TestRedisKilledAndRestartedWhileRunningReregistersWithinOneHeartbeatAndOpsResume(t *testing.T) {
	srv := redistest.Server(t)
	rig := newFaultRig(t)
	var pulls atomic.Int32
	const ttl = 3 * time.Second // heartbeat every second
	in, err := New(newTestService(), rig.options(deadlineClient(t, srv.Addr()), WithServiceTTL(ttl),
		WithControlInsecure(true),
		WithPullHandler(func(context.Context, json.RawMessage) error { pulls.Add(1); return nil }))...)
	if err != nil {
		t.Fatal(err)
	}
	shutdownOnCleanup(t, in)
	if err := in.Boot(context.Background()); err != nil {
		t.Fatal(err)
	}
	reader := deadlineClient(t, srv.Addr())
	pollUntil(t, 5*time.Second, "entry running before the kill", func() bool {
		e, err := entryOf(reader)
		return err == nil && e.Status == string(phases.Running)
	})

	srv.Restart() // kill -9, then a new empty server on the same port
	interval := registry.New(reader, registry.WithTTL(ttl)).HeartbeatInterval()
	took := pollUntil(t, interval+500*time.Millisecond, "re-registered within one heartbeat", func() bool {
		e, err := entryOf(reader)
		return err == nil && e.Status == string(phases.Running)
	})
	t.Logf("re-registered %v after the restart (heartbeat %v)", took, interval)

	c := controlops.NewClient(reader, nil)
	sent, err := c.Send(context.Background(), "svc", controlops.OpPull, "i-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	final, err := c.Wait(ctx, "svc", sent, nil, nil)
	if err != nil || final["i-1"].Status != controlops.StatusDone || pulls.Load() != 1 {
		t.Fatalf("pull after the restart: %+v, %v (handler ran %d times); want done once", final, err, pulls.Load())
	}
	if err := in.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// slowStop is a service whose OnStop takes a while, so that a Shutdown that
// waited for it would show.
type slowStop struct {
	*testService
	delay time.Duration
}

func (s slowStop) OnStop(ctx context.Context) error {
	t := time.NewTimer(s.delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return s.testService.OnStop(ctx)
}

func TestShutdownWithAnExpiredContextReturnsAtOnceWhoeverDrivesAndOnStopRunsOnce(t *testing.T) {
	for _, driver := range []string{"Run", "nobody (Boot returned)"} {
		t.Run(driver, func(t *testing.T) {
			ignore := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // after the fixture's cleanups
			f := newFixture(t)
			svc := newTestService()
			in, err := New(slowStop{svc, 300 * time.Millisecond}, f.options()...)
			if err != nil {
				t.Fatal(err)
			}
			var ran <-chan error
			if driver == "Run" {
				ran = startRun(t, in)
				waitState(t, in, phases.Running)
			} else if err := in.Boot(context.Background()); err != nil {
				t.Fatal(err)
			}
			expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			defer cancel()
			start := time.Now()
			err = in.Shutdown(expired)
			took := time.Since(start)
			t.Logf("Shutdown with an expired ctx, %s driving: %v after %v", driver, err, took)
			if !errors.Is(err, context.DeadlineExceeded) || took > 100*time.Millisecond {
				t.Fatalf("Shutdown = %v after %v, want context.DeadlineExceeded within 100ms", err, took)
			}
			// The shutdown goes on in the background; a second call with time
			// to wait gets its result.
			select {
			case <-in.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the shutdown never finished")
			}
			if err := in.Shutdown(context.Background()); err != nil {
				t.Fatalf("second Shutdown = %v, want nil", err)
			}
			if ran != nil {
				if err := wait(t, ran); err != nil {
					t.Fatalf("Run = %v", err)
				}
			}
			if n := svc.onStop.Load(); n != 1 || in.State() != phases.Stopped {
				t.Fatalf("OnStop ran %d times, state %s; want once, stopped", n, in.State())
			}
		})
	}
}

// hangingOnStart ignores its context and never returns until released.
type hangingOnStart struct {
	*testService
	release chan struct{}
}

func (s hangingOnStart) OnStart(context.Context) error {
	<-s.release
	return nil
}

func TestPhasePastItsBudgetIgnoringItsContextFailsTheBootAtBudgetPlusGraceNamingThePhase(t *testing.T) {
	srv := redistest.Server(t)
	rig := newFaultRig(t)
	svc := hangingOnStart{newTestService(), make(chan struct{})}
	const budget = 300 * time.Millisecond
	in, err := New(svc, rig.options(deadlineClient(t, srv.Addr()), WithPhaseTimeout(phases.Starting, budget))...)
	if err != nil {
		t.Fatal(err)
	}
	// Made before the goroutines are counted: a go-redis client that has not
	// connected yet keeps one (maintnotifications), and Events reads through
	// a connection of its own.
	reader := deadlineClient(t, srv.Addr())
	before := goleak.IgnoreCurrent()
	start := time.Now()
	err = in.Run(context.Background())
	took := time.Since(start)
	t.Logf("phase starting hung: Run returned after %v (budget %v + grace %v): %v", took, budget, PhaseGrace, err)

	var late *PhaseTimeoutError
	if !errors.As(err, &late) || late.State != phases.Starting || late.Budget != budget || !late.Abandoned || late.Boot {
		t.Fatalf("Run = %v, want a *PhaseTimeoutError for starting, budget %v, abandoned", err, budget)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "starting") || !strings.Contains(err.Error(), budget.String()) {
		t.Errorf("error %q does not name the phase and its budget, or is not a deadline", err)
	}
	if late.Spent < budget+PhaseGrace || took > budget+PhaseGrace+time.Second {
		t.Errorf("gave up after %v (Run returned after %v), want at %v plus the unwind", late.Spent, took, budget+PhaseGrace)
	}
	// The unwind ran the steps whose work started: OnStart was called, so OnStop ran.
	if in.State() != phases.Failed || svc.onStop.Load() != 1 {
		t.Fatalf("state %s, OnStop %d; want failed, 1", in.State(), svc.onStop.Load())
	}
	var phaseSpan sdktrace.ReadOnlySpan
	for _, s := range rig.spans.Ended() {
		if s.Name() == "phase "+string(phases.Starting) {
			phaseSpan = s
		}
	}
	if phaseSpan == nil || phaseSpan.Status().Code != codes.Error {
		t.Errorf("phase starting span missing or not Error: %v", phaseSpan)
	}
	// The events stream says why the instance failed.
	pollUntil(t, 5*time.Second, "a failed event naming the phase", func() bool {
		evs, _, err := registry.New(reader).Events(context.Background(), "0", 100, 0)
		if err != nil {
			return false
		}
		for _, ev := range evs {
			if ev.To == string(phases.Failed) && strings.Contains(ev.Error, "phase starting ran past its budget of "+budget.String()) {
				return true
			}
		}
		return false
	})

	// The one goroutine left behind is the user's hung OnStart: tell goleak
	// so, then let it go.
	goleak.VerifyNone(t, before, goleak.IgnoreAnyFunction("github.com/stargazer/lifecycle/service.hangingOnStart.OnStart"))
	close(svc.release)
}

func TestBootTimeoutEndsAHungPhaseNamingTheBootBudget(t *testing.T) {
	f := newFixture(t)
	svc := hangingOnStart{newTestService(), make(chan struct{})}
	defer close(svc.release)
	const boot = 200 * time.Millisecond
	in, err := New(svc, f.options(WithBootTimeout(boot))...)
	if err != nil {
		t.Fatal(err)
	}
	err = in.Run(context.Background())
	var late *PhaseTimeoutError
	if !errors.As(err, &late) || !late.Boot || late.State != phases.Starting || late.Budget != boot || late.Spent < boot {
		t.Fatalf("Run = %v, want the boot timeout of %v reached in starting", err, boot)
	}
	if !strings.Contains(err.Error(), "boot timeout of "+boot.String()) {
		t.Errorf("error %q does not name the boot timeout", err)
	}
}

func TestPhaseThatReturnsWithinTheGraceFailsWithoutBeingAbandoned(t *testing.T) {
	f := newFixture(t)
	// Configure honours its context: it returns as soon as the budget cancels it.
	slow := WithHook(phases.Configuring, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	in, err := New(newTestService(), f.options(slow, WithPhaseTimeout(phases.Configuring, 100*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = in.Run(context.Background())
	var late *PhaseTimeoutError
	if !errors.As(err, &late) || late.Abandoned || late.State != phases.Configuring {
		t.Fatalf("Run = %v, want a timeout of configuring, not abandoned", err)
	}
	if took := time.Since(start); took > PhaseGrace {
		t.Errorf("Run took %v: a phase that returns on cancel must not wait the grace", took)
	}
}

func TestBadTimeoutOptionsAreConfigErrors(t *testing.T) {
	for _, o := range []Option{
		WithRedisTimeout(0), WithRedisTimeout(-time.Second), WithBootTimeout(-time.Second),
		WithPhaseTimeout(phases.Running, time.Second), WithPhaseTimeout(phases.Starting, 0),
	} {
		if _, err := New(newTestService(), o); !errors.Is(err, ErrConfig) {
			t.Errorf("New = %v, want a configuration error", err)
		}
	}
}

func TestRedisErrorsNameTheAddressWithoutCredentials(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "user:s3cret@127.0.0.1:" + strconv.Itoa(1)})
	defer c.Close()
	if got := fleetenv.RedisAddr(c); got != "127.0.0.1:1" {
		t.Fatalf("redisAddr = %q, want the address without user info", got)
	}
}

func TestEntriesWrittenWhileAFailureUnwindsSayWhy(t *testing.T) {
	srv := redistest.Server(t)
	rig := newFaultRig(t)
	svc := newTestService()
	svc.failIn = phases.BuildingAdapters
	reader := deadlineClient(t, srv.Addr())
	// Read the entry as the unwind reaches deregistering, before it is removed.
	var seen registry.Entry
	atDeregistering := lifecycle.ObserverFunc(func(_ context.Context, tr lifecycle.Transition) {
		if tr.To != phases.Deregistering {
			return
		}
		pollUntil(t, 5*time.Second, "entry in deregistering", func() bool {
			e, err := entryOf(reader)
			seen = e
			return err == nil && e.Status == string(phases.Deregistering)
		})
	})
	in, err := New(svc, rig.options(deadlineClient(t, srv.Addr()), WithTransitionObserver(atDeregistering))...)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Run(context.Background()); err == nil {
		t.Fatal("Run = nil, want the failure")
	}
	if !strings.Contains(seen.Error, "BuildAdapters failed on purpose") {
		t.Fatalf("entry %+v does not say why the instance is failing", seen)
	}
	if _, err := entryOf(reader); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("entry after the unwind: %v, want it deregistered", err)
	}
}
