package registry_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/registry"
)

// benchClient returns a client of the real server TestMain started for the
// benchmarks, so BenchmarkMemberUpdate and BenchmarkRedisPingRoundTrip
// measure against the same server in the same run.
func benchClient(b *testing.B) *redis.Client {
	if benchSrv == nil {
		if os.Getenv("CI") == "true" {
			b.Fatal("redis-server not on PATH and CI=true: install redis-server (apt-get install -y redis-server) to run")
		}
		b.Skip("redis-server not on PATH: install redis-server (apt-get install -y redis-server) to run")
	}
	c := redis.NewClient(&redis.Options{Addr: benchSrv.Addr()})
	b.Cleanup(func() { _ = c.Close() })
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkMemberUpdate measures one transition's registry cost to the
// caller: Update stores the entry and queues the event; delivery happens on
// the writer goroutine. Compare with BenchmarkRedisPingRoundTrip.
func BenchmarkMemberUpdate(b *testing.B) {
	r := registry.New(benchClient(b), registry.WithQueueSize(1<<16))
	m, err := r.Member(entry("api", "i1", "init"))
	if err != nil {
		b.Fatal(err)
	}
	e := entry("api", "i1", "running")
	ev := &registry.Event{Event: "started", From: "starting", To: "registering", Phase: "8"}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		m.Update(e, ev)
	}
	b.StopTimer()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		b.Fatalf("Close: %v", err)
	}
}

// BenchmarkRedisPingRoundTrip is the cost of the cheapest Redis round trip
// against the same server: what a synchronous status write would cost at
// least.
func BenchmarkRedisPingRoundTrip(b *testing.B) {
	c := benchClient(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
	}
}
