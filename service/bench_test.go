package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/phases"
)

// criticalPath marks the contexts of a boot, so a hook can tell the boot's own
// (synchronous) Redis round trips from the registry's asynchronous ones.
type criticalPath struct{}

// roundTrips counts round trips made with a context marked criticalPath.
type roundTrips struct {
	n          atomic.Int64
	handshakes atomic.Int64
	mu         sync.Mutex
	cmds       []string // what was sent, for messages
}

// count records one round trip. go-redis's own connection handshake (HELLO, then
// CLIENT SETINFO) is counted apart: it happens once per new pooled connection, not
// per boot step.
func (h *roundTrips) count(what string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cmds = append(h.cmds, what)
	if what == "hello" || strings.HasPrefix(what, "client") {
		h.handshakes.Add(1)
		return
	}
	h.n.Add(1)
}

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if ctx.Value(criticalPath{}) != nil {
			h.count(cmd.Name())
		}
		return next(ctx, cmd)
	}
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if ctx.Value(criticalPath{}) != nil {
			names := make([]string, len(cmds))
			for i, c := range cmds {
				names[i] = c.Name()
			}
			h.count(strings.Join(names, "+"))
		}
		return next(ctx, cmds)
	}
}

type nopService struct{}

func (nopService) OnStart(context.Context) error { return nil }
func (nopService) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (nopService) OnStop(context.Context) error  { return nil }

func benchOptions(client redis.UniversalClient, id string) []Option {
	return []Option{
		WithServiceName("bench"),
		WithInstanceID(id),
		WithRedis(client),
		WithBootJitter(0),
		WithHealthAddr("127.0.0.1:0"),
		WithTracerProvider(tracenoop.NewTracerProvider()),
		WithMeterProvider(metricnoop.NewMeterProvider()),
		WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	}
}

func TestBootCriticalPathHasAtMostThreeRedisRoundTrips(t *testing.T) {
	mr := miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer client.Close()
	hook := &roundTrips{}
	client.AddHook(hook)
	in, err := New(nopService{}, benchOptions(client, "rt-1")...)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Boot(context.WithValue(context.Background(), criticalPath{}, true)); err != nil {
		t.Fatal(err)
	}
	if in.State() != phases.Running {
		t.Fatalf("state %q", in.State())
	}
	if n := hook.n.Load(); n > 3 {
		t.Fatalf("%d synchronous Redis round trips on the boot's critical path, want at most 3: %v", n, hook.cmds)
	}
	if err := in.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkBootToRunning boots an instance with zero jitter and empty hooks
// against a real redis-server on loopback. Compare with BenchmarkRedisPing, the
// round trip measured in the same run.
func BenchmarkBootToRunning(b *testing.B) {
	srv := redistest.Server(b)
	client := srv.Client(b)
	hook := &roundTrips{}
	client.AddHook(hook)
	ctx := context.WithValue(context.Background(), criticalPath{}, true)
	i := 0
	for b.Loop() {
		i++
		in, err := New(nopService{}, benchOptions(client, fmt.Sprintf("bench-%d", i))...)
		if err != nil {
			b.Fatal(err)
		}
		if err := in.Boot(ctx); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := in.Shutdown(sctx); err != nil {
			b.Fatal(err)
		}
		cancel()
		b.StartTimer()
	}
	b.ReportMetric(float64(hook.n.Load())/float64(i), "roundtrips/boot")
	b.ReportMetric(float64(hook.handshakes.Load())/float64(i), "handshakes/boot")
}

// BenchmarkRedisPing is the baseline: one go-redis PING round trip to the same
// kind of server.
func BenchmarkRedisPing(b *testing.B) {
	srv := redistest.Server(b)
	client := srv.Client(b)
	ctx := context.Background()
	for b.Loop() {
		if err := client.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}
