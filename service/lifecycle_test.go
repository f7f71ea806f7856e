package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testService records what the lifecycle calls, fails where it is told to, and
// blocks where it is told to until its context is cancelled.
type testService struct {
	mu      sync.Mutex
	calls   []string
	failIn  phases.State
	blockIn phases.State
	blocked chan struct{} // closed when the blocking phase is entered
	runErr  error
	onStop  atomic.Int32
}

func newTestService() *testService { return &testService{blocked: make(chan struct{})} }

func (s *testService) do(ctx context.Context, state phases.State, name string) error {
	s.mu.Lock()
	s.calls = append(s.calls, name)
	s.mu.Unlock()
	if s.blockIn == state {
		close(s.blocked)
		<-ctx.Done()
		return ctx.Err()
	}
	if s.failIn == state {
		return fmt.Errorf("%s failed on purpose", name)
	}
	return nil
}

func (s *testService) called(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.calls {
		if c == name {
			return true
		}
	}
	return false
}

func (s *testService) Configure(ctx context.Context) error {
	return s.do(ctx, phases.Configuring, "Configure")
}
func (s *testService) Instrument(ctx context.Context) error {
	return s.do(ctx, phases.Instrumenting, "Instrument")
}
func (s *testService) LoadModules(ctx context.Context) error {
	return s.do(ctx, phases.LoadingModules, "LoadModules")
}
func (s *testService) BuildAdapters(ctx context.Context) error {
	return s.do(ctx, phases.BuildingAdapters, "BuildAdapters")
}
func (s *testService) OnStart(ctx context.Context) error {
	return s.do(ctx, phases.Starting, "OnStart")
}
func (s *testService) Run(ctx context.Context) error {
	if err := s.do(ctx, phases.Running, "Run"); err != nil {
		return err
	}
	if s.runErr != nil {
		return s.runErr
	}
	<-ctx.Done()
	return ctx.Err()
}
func (s *testService) OnStop(ctx context.Context) error {
	s.onStop.Add(1)
	return s.do(ctx, phases.CleaningUp, "OnStop")
}

// recorder collects the states an instance goes through.
type recorder struct {
	mu     sync.Mutex
	states []phases.State
	trs    []lifecycle.Transition
}

func (r *recorder) Transitioned(_ context.Context, t lifecycle.Transition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.states) == 0 {
		r.states = append(r.states, t.From)
	}
	r.states = append(r.states, t.To)
	r.trs = append(r.trs, t)
}

func (r *recorder) transitions() []lifecycle.Transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]lifecycle.Transition(nil), r.trs...)
}

func (r *recorder) path() []phases.State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]phases.State(nil), r.states...)
}

type fixture struct {
	mr     *miniredis.Miniredis
	client *redis.Client
	spans  *tracetest.SpanRecorder
	rec    *recorder
	clock  *clockwork.FakeClock
	logs   *bytes.Buffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	mr := miniredis.RunT(t)
	// One dial attempt and no command retries: the tests that stop Redis need not
	// wait for go-redis's retry budget.
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), DialerRetries: 1, MaxRetries: -1})
	t.Cleanup(func() { client.Close() })
	return &fixture{
		mr:     mr,
		client: client,
		spans:  tracetest.NewSpanRecorder(),
		rec:    &recorder{},
		clock:  clockwork.NewFakeClock(),
		logs:   &bytes.Buffer{},
	}
}

func (f *fixture) options(extra ...Option) []Option {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(f.spans))
	opts := []Option{
		WithServiceName("svc"),
		WithInstanceID("i-1"),
		WithRedis(f.client),
		WithBootJitter(0),
		WithHealthAddr("127.0.0.1:0"),
		WithTracerProvider(tp),
		WithMeterProvider(metricnoop.NewMeterProvider()),
		WithClock(f.clock),
		WithLogger(slog.New(slog.NewTextHandler(syncWriter(f.logs), nil))),
		WithTransitionObserver(f.rec),
		WithShutdownTimeout(5 * time.Second),
	}
	return append(opts, extra...)
}

// syncWriter makes a bytes.Buffer safe for concurrent log writes.
func syncWriter(b *bytes.Buffer) io.Writer { return &lockedWriter{b: b} }

type lockedWriter struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// String returns what was written so far.
func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func startRun(t *testing.T, in *Instance) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- in.Run(context.Background()) }()
	return done
}

// run builds an instance of svc with f's options and opts, runs it, and
// returns it once it is running, with the channel of Run's result.
func (f *fixture) run(t *testing.T, svc Service, opts ...Option) (*Instance, <-chan error) {
	t.Helper()
	in, err := New(svc, f.options(opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	waitState(t, in, phases.Running)
	return in, done
}

// waitState polls until the instance is in want, or fails the test at the deadline.
func waitState(t *testing.T, in *Instance, want phases.State) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for in.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("state %q, want %q before the deadline", in.State(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func wait(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return before the deadline")
		return nil
	}
}

var cleanPath = []phases.State{
	phases.Init, phases.Connecting, phases.Configuring, phases.Instrumenting, phases.LoadingModules,
	phases.BuildingAdapters, phases.Starting, phases.Registering, phases.ServingHealth, phases.Running,
	phases.StoppingDaemons, phases.StoppingHealth, phases.Deregistering, phases.CleaningUp, phases.Stopped,
}

func TestCleanRunVisitsEveryStateInOrder(t *testing.T) {
	f := newFixture(t)
	svc := newTestService()
	in, done := f.run(t, svc)
	if err := in.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if err := wait(t, done); err != nil {
		t.Fatalf("Run = %v", err)
	}
	assertPath(t, f.rec.path(), cleanPath)

	// Spans: one per transition, under a lifecycle.boot root up to running, and a
	// lifecycle.shutdown root after, linked to the boot.
	var boot, shut sdktrace.ReadOnlySpan
	var transitions []sdktrace.ReadOnlySpan
	for _, s := range f.spans.Ended() {
		switch {
		case s.Name() == lifecycle.SpanBoot:
			boot = s
		case s.Name() == lifecycle.SpanShutdown:
			shut = s
		case strings.HasPrefix(s.Name(), "transition "):
			transitions = append(transitions, s)
		}
	}
	if boot == nil || shut == nil {
		t.Fatalf("missing root spans: boot=%v shutdown=%v", boot != nil, shut != nil)
	}
	if boot.SpanContext().TraceID() == shut.SpanContext().TraceID() {
		t.Errorf("boot and shutdown share a trace")
	}
	if len(shut.Links()) != 1 || shut.Links()[0].SpanContext.SpanID() != boot.SpanContext().SpanID() {
		t.Errorf("shutdown root is not linked to the boot root")
	}
	if len(transitions) != len(cleanPath)-1 {
		t.Fatalf("%d transition spans, want %d", len(transitions), len(cleanPath)-1)
	}
	for i, s := range transitions {
		root := boot
		if i >= 9 { // running -> stopping_daemons onwards
			root = shut
		}
		if s.Parent().SpanID() != root.SpanContext().SpanID() {
			t.Errorf("span %q: parent is not the %s root", s.Name(), root.Name())
		}
		from, _ := attrOf(s.Attributes(), lifecycle.AttrFrom)
		to, _ := attrOf(s.Attributes(), lifecycle.AttrTo)
		ev, _ := attrOf(s.Attributes(), lifecycle.AttrEvent)
		if from.AsString() != string(cleanPath[i]) || to.AsString() != string(cleanPath[i+1]) || ev.AsString() == "" {
			t.Errorf("span %d: %s -> %s (%s), want %s -> %s", i, from.AsString(), to.AsString(), ev.AsString(), cleanPath[i], cleanPath[i+1])
		}
		info, _ := phases.Lifecycle().State(cleanPath[i+1])
		if p, ok := attrOf(s.Attributes(), lifecycle.AttrPhase); (info.Number > 0) != ok || (ok && p.AsInt64() != int64(info.Number)) {
			t.Errorf("span %q: lifecycle.phase %v, want %d", s.Name(), p.String(), info.Number)
		}
	}

	// The events stream holds every transition, in order, connect included
	// (held in memory until Redis answered the ping).
	got := eventStatuses(t, f.client)
	assertPath(t, got, cleanPath[1:])
	if n := len(f.mr.Keys()); !(n > 0) || f.mr.Exists(registry.EntryKey("svc", "i-1")) {
		t.Errorf("entry still registered after a clean stop (keys %v)", f.mr.Keys())
	}
}

// eventStatuses reads the destination states of the sg:events stream, polling
// until the final state arrives (delivery is asynchronous).
func eventStatuses(t *testing.T, c *redis.Client) []phases.State {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msgs, err := c.XRange(context.Background(), registry.EventsKey, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		var out []phases.State
		for _, m := range msgs {
			out = append(out, phases.State(fmt.Sprint(m.Values["to"])))
		}
		if n := len(out); n > 0 && (out[n-1] == phases.Stopped || out[n-1] == phases.Failed) || time.Now().After(deadline) {
			return out
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func assertPath(t *testing.T, got, want []phases.State) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("path:\n got %v\nwant %v", got, want)
	}
}

// pingFails makes PING fail while every other command reaches the live server, so
// a test can show that nothing was written.
type pingFails struct{}

func (pingFails) DialHook(next redis.DialHook) redis.DialHook { return next }
func (pingFails) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "ping" {
			err := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}
func (pingFails) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func TestPingFailureExitsWhenRedisRequired(t *testing.T) {
	f := newFixture(t)
	f.client.AddHook(pingFails{})
	svc := newTestService()
	in, err := New(svc, f.options(WithRedisRequired(true))...)
	if err != nil {
		t.Fatal(err)
	}
	err = in.Run(context.Background())
	if !errors.Is(err, ErrRedisUnavailable) {
		t.Fatalf("Run = %v, want ErrRedisUnavailable", err)
	}
	assertPath(t, f.rec.path(), []phases.State{phases.Init, phases.Connecting, phases.Failed})
	trs := f.rec.transitions()
	if tr := trs[len(trs)-1]; tr.Guard.String() != "redis_required" {
		t.Errorf("ping_failed decided by %q, want redis_required", tr.Guard)
	}
	if keys := f.mr.Keys(); len(keys) != 0 {
		t.Errorf("something was written to Redis: %v", keys)
	}
	if svc.called("OnStart") || svc.onStop.Load() != 0 {
		t.Errorf("service hooks ran: %v", svc.calls)
	}
}

func TestPingFailureContinuesDegradedAndRegistersOnceRedisAnswers(t *testing.T) {
	f := newFixture(t)
	f.mr.Close() // Redis is down at boot
	svc := newTestService()
	in, done := f.run(t, svc, WithRedisRequired(false))
	if !in.Degraded() {
		t.Fatal("instance not marked degraded")
	}
	if tr := f.rec.transitions()[1]; tr.To != phases.Configuring || tr.Guard.String() != "not redis_required" {
		t.Fatalf("ping_failed went to %q decided by %q", tr.To, tr.Guard)
	}
	// The ping's failure is the cause of ping_failed alone: the phases after
	// it completed, and their transitions carry no error.
	for _, tr := range f.rec.transitions()[2:] {
		if tr.Cause != nil {
			t.Errorf("%s (%s -> %s) carries cause %v; only ping_failed should", tr.Event, tr.From, tr.To, tr.Cause)
		}
	}

	if err := f.mr.Restart(); err != nil {
		t.Fatal(err)
	}
	key := registry.EntryKey("svc", "i-1")
	deadline := time.Now().Add(10 * time.Second)
	for !f.mr.Exists(key) {
		if time.Now().After(deadline) {
			t.Fatal("entry not registered after Redis came back")
		}
		f.clock.Advance(time.Second) // heartbeat and retry timers
		time.Sleep(2 * time.Millisecond)
	}
	var e registry.Entry
	deadline = time.Now().Add(10 * time.Second)
	for e.Status != string(phases.Running) {
		if time.Now().After(deadline) {
			t.Fatalf("entry status %q, want running", e.Status)
		}
		e, _ = registry.New(f.client).Entry(context.Background(), "svc", "i-1")
		f.clock.Advance(time.Second)
		time.Sleep(2 * time.Millisecond)
	}
	if !e.Degraded {
		t.Errorf("entry does not say degraded")
	}
	if err := in.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestFailingPhaseUnwindsToFailed(t *testing.T) {
	for _, tc := range []struct {
		state      phases.State
		wantOnStop bool
	}{
		{phases.Configuring, false},
		{phases.Instrumenting, false},
		{phases.LoadingModules, false},
		{phases.BuildingAdapters, false},
		{phases.Starting, true},
		{phases.Running, true},
	} {
		t.Run(string(tc.state), func(t *testing.T) {
			f := newFixture(t)
			svc := newTestService()
			svc.failIn = tc.state
			in, err := New(svc, f.options()...)
			if err != nil {
				t.Fatal(err)
			}
			err = in.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), "failed on purpose") {
				t.Fatalf("Run = %v, want the hook's error", err)
			}
			path := f.rec.path()
			if last := path[len(path)-1]; last != phases.Failed {
				t.Fatalf("ended in %q, want failed (path %v)", last, path)
			}
			for _, s := range phases.Lifecycle().StatesIn(phases.GroupShutdown) {
				if !containsState(path, s) {
					t.Errorf("unwind skipped state %q: %v", s, path)
				}
			}
			if got := svc.onStop.Load() == 1; got != tc.wantOnStop {
				t.Errorf("OnStop called: %v, want %v (OnStart called: %v)", got, tc.wantOnStop, svc.called("OnStart"))
			}
			var failing sdktrace.ReadOnlySpan
			for _, s := range f.spans.Ended() {
				if s.Name() == "phase "+string(tc.state) {
					failing = s
				}
			}
			if tc.state == phases.Running {
				for _, s := range f.spans.Ended() {
					if strings.HasPrefix(s.Name(), "transition fail") {
						failing = s
					}
				}
			}
			if failing == nil || failing.Status().Code != codes.Error {
				t.Fatalf("failing span missing or not Error: %v", failing)
			}
			if f.mr.Exists(registry.EntryKey("svc", "i-1")) {
				t.Errorf("entry still registered after failing")
			}
		})
	}
}

func containsState(path []phases.State, s phases.State) bool {
	for _, p := range path {
		if p == s {
			return true
		}
	}
	return false
}

func TestPanicInHookIsAFailedTransitionNotACrash(t *testing.T) {
	f := newFixture(t)
	in, err := New(newTestService(), f.options(WithHook(phases.LoadingModules, func(context.Context) error {
		panic("plugin bug")
	}))...)
	if err != nil {
		t.Fatal(err)
	}
	err = in.Run(context.Background())
	var pe *lifecycle.PanicError
	if !errors.As(err, &pe) {
		t.Fatalf("Run = %v, want a lifecycle.PanicError", err)
	}
	if in.State() != phases.Failed {
		t.Fatalf("state %q, want failed", in.State())
	}
}
