package process

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/service"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testControlKey = []byte("test-control-key-0123456789")

// testService runs until its context ends; blockIn makes a boot phase's
// hook wait for its context instead.
type testService struct {
	blockIn phases.State
	blocked chan struct{} // closed when the blocking phase is entered

	started   chan struct{} // closed when Run began
	startOnce sync.Once
}

func newTestService() *testService {
	return &testService{blocked: make(chan struct{}), started: make(chan struct{})}
}

func (s *testService) block(ctx context.Context, state phases.State) error {
	if s.blockIn == state {
		close(s.blocked)
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (s *testService) Configure(ctx context.Context) error { return s.block(ctx, phases.Configuring) }
func (s *testService) OnStart(ctx context.Context) error   { return s.block(ctx, phases.Starting) }
func (s *testService) Run(ctx context.Context) error {
	s.startOnce.Do(func() { close(s.started) })
	<-ctx.Done()
	return nil
}
func (s *testService) OnStop(context.Context) error { return nil }

// waitRun waits until Service.Run began.
func (s *testService) waitRun(t *testing.T) {
	t.Helper()
	select {
	case <-s.started:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not begin before the deadline")
	}
}

// recorder records the transitions.
type recorder struct {
	mu     sync.Mutex
	states []phases.State
	trs    []lifecycle.Transition
}

func (r *recorder) Transitioned(_ context.Context, t lifecycle.Transition) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, t.To)
	r.trs = append(r.trs, t)
}

func (r *recorder) path() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []string
	for _, st := range r.states {
		s = append(s, string(st))
	}
	return strings.Join(s, " ")
}

func (r *recorder) transitions() []lifecycle.Transition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]lifecycle.Transition(nil), r.trs...)
}

// fixture is a miniredis, a client of it, a fake clock and a log.
type fixture struct {
	mr     *miniredis.Miniredis
	client *redis.Client
	rec    *recorder
	clock  *clockwork.FakeClock
	logs   *lockedWriter
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr(), DialerRetries: 1, MaxRetries: -1})
	t.Cleanup(func() { client.Close() })
	return &fixture{mr: mr, client: client, rec: &recorder{}, clock: clockwork.NewFakeClock(), logs: &lockedWriter{b: &bytes.Buffer{}}}
}

// options are the service options of an instance "svc"/"i-1" on the
// fixture's Redis and clock, with a health server on loopback.
func (f *fixture) options(extra ...service.Option) []service.Option {
	opts := []service.Option{
		service.WithServiceName("svc"),
		service.WithInstanceID("i-1"),
		service.WithRedis(f.client),
		service.WithBootJitter(0),
		service.WithHealthAddr("127.0.0.1:0"),
		service.WithTracerProvider(tracenoop.NewTracerProvider()),
		service.WithMeterProvider(metricnoop.NewMeterProvider()),
		service.WithClock(f.clock),
		service.WithLogger(slog.New(slog.NewTextHandler(f.logs, nil))),
		service.WithTransitionObserver(f.rec),
		service.WithShutdownTimeout(5 * time.Second),
	}
	return append(opts, extra...)
}

// config is the process Config of a test: the environment env, the log in
// the fixture's, the fixture's clock.
func (f *fixture) config(env map[string]string) Config {
	return Config{Getenv: envOf(env), Stderr: f.logs, clock: f.clock}
}

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// lockedWriter makes a bytes.Buffer safe for concurrent log writes.
type lockedWriter struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (w *lockedWriter) logger() *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

var _ io.Writer = (*lockedWriter)(nil)

func startRun(t *testing.T, in *service.Instance) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- in.Run(context.Background()) }()
	return done
}

// waitState polls until the instance is in want, or fails the test at the deadline.
func waitState(t *testing.T, in *service.Instance, want phases.State) {
	t.Helper()
	poll(t, func() bool { return in.State() == want }, "state "+string(want))
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

// poll waits until cond holds, or fails the test naming what at the deadline.
func poll(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not before the deadline", what)
		}
		time.Sleep(time.Millisecond) // polling interval, bounded by the deadline
	}
}
