package fleettest

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/service"
)

// controlKey signs the ops the tests send; instances verify with it.
var controlKey = []byte("fleettest-control-key-0123456789")

// nopService runs until its context ends.
type nopService struct{}

func (nopService) OnStart(context.Context) error { return nil }
func (nopService) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (nopService) OnStop(context.Context) error  { return nil }

// syncBuffer is a log sink safe for an instance's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// node is one lifecycle instance run by a test.
type node struct {
	in   *service.Instance
	done chan error
	logs *syncBuffer

	stopOnce sync.Once
	stopTook time.Duration
}

// instanceOptions are the options every instance of these tests has: no boot
// jitter, a health server on a free loopback port, signed control ops with a
// pull handler, no-op telemetry; extra come last.
func instanceOptions(rdb redis.UniversalClient, svcName, id string, logs *syncBuffer, extra ...service.Option) []service.Option {
	opts := []service.Option{
		service.WithRedis(rdb),
		service.WithServiceName(svcName),
		service.WithInstanceID(id),
		service.WithBootJitter(0),
		service.WithHealthOption(health.WithAddr("127.0.0.1:0")),
		service.WithControlKeys(controlKey),
		service.WithPullHandler(func(context.Context, json.RawMessage) error { return nil }),
		service.WithTracerProvider(tracenoop.NewTracerProvider()),
		service.WithMeterProvider(noop.NewMeterProvider()),
		service.WithLogger(slog.New(slog.NewTextHandler(logs, nil))),
	}
	return append(opts, extra...)
}

// startInstance boots an instance of svcName through rdb and runs it until
// the test ends; the test's cleanup shuts it down and, if the test failed,
// logs what it logged.
func startInstance(tb testing.TB, rdb redis.UniversalClient, svcName, id string, extra ...service.Option) *node {
	tb.Helper()
	n := &node{done: make(chan error, 1), logs: &syncBuffer{}}
	in, err := service.New(nopService{}, instanceOptions(rdb, svcName, id, n.logs, extra...)...)
	if err != nil {
		tb.Fatal(err)
	}
	n.in = in
	ctx := context.Background()
	if err := in.Boot(ctx); err != nil {
		tb.Fatalf("boot of %s/%s: %v\n%s", svcName, id, err, n.logs.String())
	}
	go func() { n.done <- in.Run(ctx) }()
	tb.Cleanup(func() {
		n.shutdown(tb)
		if tb.Failed() {
			tb.Logf("log of %s/%s:\n%s", svcName, id, n.logs.String())
		}
	})
	return n
}

// shutdown stops the instance and returns how long it took; later calls
// return the same.
func (n *node) shutdown(tb testing.TB) time.Duration {
	tb.Helper()
	n.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		if err := n.in.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown of %s/%s: %v", n.in.Name(), n.in.ID(), err)
		}
		select {
		case <-n.done:
		case <-ctx.Done():
			tb.Errorf("Run of %s/%s did not return", n.in.Name(), n.in.ID())
		}
		n.stopTook = time.Since(start)
	})
	return n.stopTook
}

// running reports whether the instance is in running or pulling.
func (n *node) running() bool {
	s := n.in.State()
	return s == phases.Running || s == phases.Pulling
}

// poll calls cond every 5 ms until it holds, and fails the test after
// timeout, naming what it waited for.
func poll(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %v: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}
