package service

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/phases"
)

// drainService runs until its context is cancelled and says when that
// happened; OnStop records how long its context had left.
type drainService struct {
	testService
	started   chan struct{} // closed when Run begins
	cancelled chan struct{}
	mu        sync.Mutex
	stopLeft  time.Duration
}

func newDrainService() *drainService {
	return &drainService{testService: *newTestService(), started: make(chan struct{}), cancelled: make(chan struct{})}
}

func (s *drainService) Run(ctx context.Context) error {
	close(s.started)
	<-ctx.Done()
	close(s.cancelled)
	return nil
}

func (s *drainService) OnStop(ctx context.Context) error {
	if dl, ok := ctx.Deadline(); ok {
		s.mu.Lock()
		s.stopLeft = time.Until(dl)
		s.mu.Unlock()
	}
	return nil
}

// waitRun waits until Service.Run began.
func (s *drainService) waitRun(t *testing.T) {
	t.Helper()
	select {
	case <-s.started:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not begin before the deadline")
	}
}

func (s *drainService) runCancelled() bool {
	select {
	case <-s.cancelled:
		return true
	default:
		return false
	}
}

// shutdownSpans returns the ended lifecycle.SpanShutdown spans and how many of their
// children are transitions whose span name starts with prefix ("transition
// stop", "transition restart").
func shutdownSpans(f *fixture, prefix string) (roots []sdktrace.ReadOnlySpan, held int) {
	ended := f.spans.Ended()
	for _, sp := range ended {
		if sp.Name() != lifecycle.SpanShutdown {
			continue
		}
		roots = append(roots, sp)
		for _, c := range ended {
			if c.Parent().SpanID() == sp.SpanContext().SpanID() && strings.HasPrefix(c.Name(), prefix) {
				held++
			}
		}
	}
	return roots, held
}

// waitServing waits until Run calls Service.Run. The machine is in running
// a moment before: a stop or a drain op that comes in between finds the
// boot just over, and goes on without a drain delay (or is refused).
func waitServing(t *testing.T, in *Instance) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		in.mu.Lock()
		s := in.stage
		in.mu.Unlock()
		if s == serving {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stage %s, want serving before the deadline", s)
		}
		time.Sleep(time.Millisecond) // polling interval, bounded by the deadline
	}
}

// probeCode returns the status code of GET path on the instance's health server.
func probeCode(t *testing.T, in *Instance, path string) int {
	t.Helper()
	resp, err := http.Get("http://" + in.HealthAddr() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestStopWithADrainDelayDrainsThenCancelsRunOnlyAfterTheDelay(t *testing.T) {
	f := newFixture(t)
	svc := newDrainService()
	const delay = 10 * time.Second
	in, err := New(svc, f.options(WithDrainDelay(delay), WithShutdownTimeout(30*time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	svc.waitRun(t)

	in.RequestStop()
	// requestStop fires stop [drain_delay] before it returns.
	if s := in.State(); s != phases.Draining {
		t.Fatalf("state right after the stop: %s, want draining", s)
	}
	if code := probeCode(t, in, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining = %d, want 503", code)
	}
	if code := probeCode(t, in, "/livez"); code != http.StatusOK {
		t.Errorf("/livez while draining = %d, want 200", code)
	}
	in.RequestStop() // a second call changes nothing: RequestStop is idempotent
	f.clock.Advance(delay - time.Millisecond)
	if svc.runCancelled() || in.State() != phases.Draining {
		t.Fatalf("before the delay is over: Run cancelled %v, state %s; want Run going on in draining", svc.runCancelled(), in.State())
	}
	f.clock.Advance(time.Millisecond)
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if !svc.runCancelled() {
		t.Fatal("Run's context was never cancelled")
	}
	assertPath(t, f.rec.path()[9:], []phases.State{phases.Running, phases.Draining, phases.StoppingDaemons,
		phases.StoppingHealth, phases.Deregistering, phases.CleaningUp, phases.Stopped})
	trs := f.rec.transitions()
	for _, tr := range trs {
		if tr.Event == phases.Stop && tr.From == phases.Running && (tr.Guard.String() != phases.GuardDrainDelay || tr.To != phases.Draining) {
			t.Errorf("stop from running: %+v, want stop [drain_delay] to draining", tr)
		}
	}
	// The delay counted inside the shutdown timeout: OnStop had at most
	// 30s - 10s left.
	svc.mu.Lock()
	left := svc.stopLeft
	svc.mu.Unlock()
	if left <= 0 || left > 20*time.Second {
		t.Errorf("OnStop's context had %s left, want at most 20s (30s timeout - 10s drain)", left)
	}
	// One shutdown trace: the drain opened it.
	roots, stopsInRoot := shutdownSpans(f, "transition stop")
	if len(roots) != 1 || stopsInRoot != 2 {
		t.Errorf("%d %s roots holding %d stop transitions, want one holding both (into and out of draining)", len(roots), lifecycle.SpanShutdown, stopsInRoot)
	}
}

func TestSkipDrainDelayEndsTheDelayAtOnce(t *testing.T) {
	f := newFixture(t)
	svc := newDrainService()
	in, err := New(svc, f.options(WithDrainDelay(time.Hour), WithShutdownTimeout(2*time.Hour))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	svc.waitRun(t)
	if in.SkipDrainDelay() {
		t.Error("SkipDrainDelay reported a delay before any stop")
	}
	in.RequestStop()
	waitState(t, in, phases.Draining)
	if !in.SkipDrainDelay() {
		t.Fatal("SkipDrainDelay found no delay to skip while draining")
	}
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if in.State() != phases.Stopped || !svc.runCancelled() {
		t.Fatalf("state %s, Run cancelled %v; want stopped", in.State(), svc.runCancelled())
	}
	if in.SkipDrainDelay() {
		t.Error("SkipDrainDelay reported a delay after the stop")
	}
}

func TestStopWithoutADrainDelayGoesStraightToTheShutdownSteps(t *testing.T) {
	f := newFixture(t)
	in, done := f.run(t, newDrainService())
	in.RequestStop()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if containsState(f.rec.path(), phases.Draining) {
		t.Fatalf("path %v goes through draining without a drain delay", f.rec.path())
	}
	for _, tr := range f.rec.transitions() {
		if tr.Event == phases.Stop && tr.Guard.String() != "not "+phases.GuardDrainDelay {
			t.Errorf("stop from running: guard %q, want not drain_delay", tr.Guard)
		}
	}
}

func TestShutdownAfterBootWithoutRunWaitsOutTheDrainDelay(t *testing.T) {
	f := newFixture(t)
	in, err := New(newDrainService(), f.options(WithDrainDelay(5*time.Second), WithShutdownTimeout(10*time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Boot(context.Background()); err != nil {
		t.Fatal(err)
	}
	in.RequestStop()
	if s := in.State(); s != phases.Draining {
		t.Fatalf("state %s, want draining", s)
	}
	f.clock.Advance(5 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := in.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := in.Run(context.Background()); err != nil {
		t.Fatalf("Run after the drained shutdown: %v, want the result (nil)", err)
	}
	assertPath(t, f.rec.path()[9:12], []phases.State{phases.Running, phases.Draining, phases.StoppingDaemons})
}

func TestDrainDelayNotShorterThanTheShutdownTimeoutIsAConfigError(t *testing.T) {
	for _, d := range []time.Duration{-time.Second, 30 * time.Second, time.Minute} {
		_, err := New(nopService{}, WithoutHealthServer(), WithDrainDelay(d), WithShutdownTimeout(30*time.Second))
		if err == nil || !strings.Contains(err.Error(), "WithDrainDelay") || !strings.Contains(err.Error(), "shutdown timeout") {
			t.Errorf("WithDrainDelay(%s) with a 30s shutdown timeout: %v, want a config error naming both", d, err)
		}
	}
}

func TestDrainAndUndrainOpsTakeARunningInstanceOutOfRotationAndBack(t *testing.T) {
	f := newFixture(t)
	svc := newDrainService()
	// A drain delay too: a stop of an instance an operator drained does not
	// wait it again.
	in, err := New(svc, f.options(WithControlKeys(testControlKey), WithDrainDelay(time.Hour), WithShutdownTimeout(2*time.Hour))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	svc.waitRun(t)

	if r := sendAndWait(t, f, controlops.OpUndrain, nil); r.Status != controlops.StatusRejected {
		t.Errorf("undrain while running: %s %q, want rejected", r.Status, r.Reason)
	}
	if r := sendAndWait(t, f, controlops.OpDrain, nil); r.Status != controlops.StatusDone || r.State != string(phases.Draining) {
		t.Fatalf("drain: %+v, want done in draining", r)
	}
	if code := probeCode(t, in, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz when drained = %d, want 503", code)
	}
	if code := probeCode(t, in, "/livez"); code != http.StatusOK {
		t.Errorf("/livez when drained = %d, want 200", code)
	}
	f.clock.Advance(24 * time.Hour) // drained for a day: not wedged
	if code := probeCode(t, in, "/livez"); code != http.StatusOK || svc.runCancelled() {
		t.Errorf("a day later: /livez %d, Run cancelled %v; want 200 and Run going on", code, svc.runCancelled())
	}
	if r := sendAndWait(t, f, controlops.OpDrain, nil); r.Status != controlops.StatusRejected {
		t.Errorf("drain while draining: %s %q, want rejected", r.Status, r.Reason)
	}
	if r := sendAndWait(t, f, controlops.OpUndrain, nil); r.Status != controlops.StatusDone || r.State != string(phases.Running) {
		t.Fatalf("undrain: %+v, want done in running", r)
	}
	if code := probeCode(t, in, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz when undrained = %d, want 200", code)
	}
	if r := sendAndWait(t, f, controlops.OpDrain, nil); r.Status != controlops.StatusDone {
		t.Fatalf("drain again: %+v", r)
	}

	in.RequestStop() // no second drain: the stop goes on at once
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	want := "running draining running draining stopping_daemons"
	if got := statesString(f.rec.path()); !strings.Contains(got, want) {
		t.Fatalf("path %s, want it to contain %s", got, want)
	}
}

func TestUndrainIsRefusedWhileAStopWaitsOutItsDrainDelay(t *testing.T) {
	f := newFixture(t)
	in, err := New(newDrainService(), f.options(WithDrainDelay(time.Hour), WithShutdownTimeout(2*time.Hour))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	waitServing(t, in)
	in.RequestStop()
	if err := in.Undrain(context.Background()); err == nil {
		t.Fatal("Undrain undid a stop's drain")
	}
	if err := in.RequestRestart(); err == nil {
		t.Fatal("RequestRestart was accepted during a stop's drain")
	}
	if s := in.State(); s != phases.Draining {
		t.Fatalf("state %s, want draining", s)
	}
	in.SkipDrainDelay()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestRestartFromAnOperatorDrainedInstance(t *testing.T) {
	f := newFixture(t)
	in, err := New(newDrainService(), f.options()...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	waitServing(t, in)
	if err := in.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := in.RequestRestart(); err != nil {
		t.Fatalf("RequestRestart from draining: %v", err)
	}
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if !in.Restarting() {
		t.Error("Restarting() = false")
	}
	for _, tr := range f.rec.transitions() {
		if tr.Event == phases.Restart && tr.From != phases.Draining {
			t.Errorf("restart from %s, want from draining", tr.From)
		}
	}
}

func TestRunReturningOnItsOwnDuringTheDrainDelayEndsIt(t *testing.T) {
	f := newFixture(t)
	returned := make(chan struct{})
	in, err := New(runFunc(func(ctx context.Context) error { <-returned; return nil }),
		f.options(WithDrainDelay(time.Hour), WithShutdownTimeout(2*time.Hour))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	waitServing(t, in)
	in.RequestStop()
	waitState(t, in, phases.Draining)
	close(returned)
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if in.SkipDrainDelay() {
		t.Error("a drain delay was still in progress after Run returned")
	}
	if s := in.State(); s != phases.Stopped {
		t.Fatalf("state %s, want stopped", s)
	}
}

// runFunc is a Service whose Run is the function.
type runFunc func(ctx context.Context) error

func (runFunc) OnStart(context.Context) error   { return nil }
func (f runFunc) Run(ctx context.Context) error { return f(ctx) }
func (runFunc) OnStop(context.Context) error    { return nil }

func TestRestartWithADrainDelayDrainsFirstLikeAStop(t *testing.T) {
	f := newFixture(t)
	svc := newDrainService()
	const delay = 10 * time.Second
	in, err := New(svc, f.options(WithDrainDelay(delay), WithShutdownTimeout(30*time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	svc.waitRun(t)

	// As the control-ops daemon asks for it: inside the op's trace.
	op := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled})
	if err := in.restart(trace.SpanContextFromContext(trace.ContextWithSpanContext(context.Background(), op))); err != nil {
		t.Fatal(err)
	}
	if s := in.State(); s != phases.Draining {
		t.Fatalf("state right after the restart: %s, want draining", s)
	}
	if code := probeCode(t, in, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining for a restart = %d, want 503", code)
	}
	if err := in.RequestRestart(); err == nil {
		t.Error("a second restart was accepted during the drain")
	}
	f.clock.Advance(delay - time.Millisecond)
	if svc.runCancelled() || in.State() != phases.Draining {
		t.Fatalf("before the delay is over: Run cancelled %v, state %s; want Run going on in draining", svc.runCancelled(), in.State())
	}
	f.clock.Advance(time.Millisecond)
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if !in.Restarting() {
		t.Error("Restarting() = false after a restart that drained first")
	}
	assertPath(t, f.rec.path()[9:], []phases.State{phases.Running, phases.Draining, phases.StoppingDaemons,
		phases.StoppingHealth, phases.Deregistering, phases.CleaningUp, phases.Stopped})
	var edges []string
	for _, tr := range f.rec.transitions() {
		if tr.Event == phases.Restart {
			edges = append(edges, string(tr.From)+" -"+tr.Guard.String()+"-> "+string(tr.To))
		}
	}
	if got, want := strings.Join(edges, "; "), "running -drain_delay-> draining; draining --> stopping_daemons"; got != want {
		t.Errorf("restart edges %q, want %q", got, want)
	}
	// One shutdown span, in the op's trace, holding both restart transitions.
	roots, inRoot := shutdownSpans(f, "transition restart")
	for _, sp := range roots {
		if sp.SpanContext().TraceID() != op.TraceID() {
			t.Errorf("%s in trace %s, want the op's %s", lifecycle.SpanShutdown, sp.SpanContext().TraceID(), op.TraceID())
		}
	}
	if len(roots) != 1 || inRoot != 2 {
		t.Errorf("%d %s spans holding %d restart transitions, want one holding both", len(roots), lifecycle.SpanShutdown, inRoot)
	}
}

func TestRestartWithoutADrainDelayLeavesRunningAtOnce(t *testing.T) {
	f := newFixture(t)
	svc := newDrainService()
	in, err := New(svc, f.options()...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	svc.waitRun(t)
	if err := in.RequestRestart(); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	for _, tr := range f.rec.transitions() {
		if tr.Event == phases.Restart && (tr.From != phases.Running || tr.To != phases.StoppingDaemons || tr.Guard.String() != "not "+phases.GuardDrainDelay) {
			t.Errorf("restart: %s -> %s [%s], want running -> stopping_daemons [not drain_delay]", tr.From, tr.To, tr.Guard)
		}
	}
}
