package registry_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
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

// BenchmarkEntryWrite measures one synchronous entry write (Registry.Register:
// the entry script and the services script in one pipeline) on a real
// redis-server, with the scripts sent by SHA1 (EVALSHA, as the registry does)
// and with their text every time (EVAL, as it did), and reports what Redis
// spent on each: CPU (redis-cpu-us/op, from INFO cpu) and bytes received
// (input-B/op).
//
//	go test -run '^$' -bench EntryWrite -benchmem -count 6 ./registry
func BenchmarkEntryWrite(b *testing.B) {
	for _, mode := range []string{"evalsha", "eval"} {
		b.Run("scripts="+mode, func(b *testing.B) {
			c := benchClient(b)
			var opts []registry.Option
			if mode == "eval" {
				opts = append(opts, registry.WithScriptText())
			}
			r := registry.New(c, opts...)
			ctx := context.Background()
			e := entry("api", "i1", "running")
			if err := r.Register(ctx, e); err != nil { // Redis caches the scripts
				b.Fatal(err)
			}
			before, err := redistest.ReadStats(ctx, c)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := r.Register(ctx, e); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			after, err := redistest.ReadStats(ctx, c)
			if err != nil {
				b.Fatal(err)
			}
			d := after.Since(before)
			b.ReportMetric(float64(d.CPU.Nanoseconds())/1000/float64(b.N), "redis-cpu-us/op")
			b.ReportMetric(float64(d.NetInput)/float64(b.N), "input-B/op")
		})
	}
}
