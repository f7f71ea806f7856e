package fleettest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
)

// idleWindow is how long BenchmarkIdleInstance watches: the environment
// variable IDLE_WINDOW (a duration), 30s by default. An idle instance's work
// comes in periods of 10s (heartbeat) and 30s (control read, Redis check), so
// a window of 30s can hold one heartbeat more or less than the average
// (about 0.13 commands/s for one instance); 90s or more narrows that.
func idleWindow(b *testing.B) time.Duration {
	if v := os.Getenv("IDLE_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.Fatalf("IDLE_WINDOW=%q: want a duration such as 30s", v)
		}
		return d
	}
	return 30 * time.Second
}

// newClient returns a client as an instance's process would have one, closed
// by the test's cleanup.
func newClient(tb testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// BenchmarkIdleInstance measures what idle lifecycle instances (service.New
// with WithRedis, boot jitter 0, the default TTL of 30s, a health server,
// signed control ops) cost one real redis-server once they are running: the
// commands Redis runs per instance per second (cmds/s/instance, from INFO
// commandstats, which counts the commands a script runs, so a heartbeat is
// four), and the CPU Redis spends, per instance (redis-cpu-us/s/instance) and
// in all (redis-cpu-%core). One instance shows the budget (at most 0.5
// commands a second); a thousand, each with its own client as a process has,
// show the CPU per instance that the capacity in BENCHMARKS.md is derived
// from, with the connections (conns/instance) and Redis memory
// (mem-B/instance: used_memory over an empty server, the connections'
// buffers included) each costs. Zero instances is the baseline: what an idle Redis spends on its own
// (its timers run ten times a second). The log line breaks the commands down
// by name.
//
//	go test -run '^$' -bench IdleInstance -benchtime 1x ./internal/fleettest
//	IDLE_WINDOW=90s go test -run '^$' -bench 'IdleInstance/instances=1$' -benchtime 1x ./internal/fleettest
func BenchmarkIdleInstance(b *testing.B) {
	for _, n := range []int{0, 1, 1000} {
		b.Run(fmt.Sprintf("instances=%d", n), func(b *testing.B) {
			srv := redistest.Server(b, "--maxclients", "10000")
			watch := srv.Client(b)
			ctx := context.Background()
			empty, err := redistest.ReadStats(ctx, watch)
			if err != nil {
				b.Fatal(err)
			}
			for i := range n {
				startInstance(b, newClient(b, srv.Addr()), "idle", fmt.Sprintf("i-%04d", i))
			}
			// Idle: every control-ops daemon blocks in its XREAD.
			poll(b, time.Minute, "every daemon blocked in XREAD", func() bool {
				return strings.Contains(watch.Info(ctx, "clients").Val(), fmt.Sprintf("blocked_clients:%d\r", n))
			})
			window := idleWindow(b)
			for range b.N {
				before, err := redistest.ReadStats(ctx, watch)
				if err != nil {
					b.Fatal(err)
				}
				time.Sleep(window) // the measurement window
				after, err := redistest.ReadStats(ctx, watch)
				if err != nil {
					b.Fatal(err)
				}
				d := after.Since(before)
				b.Logf("%d idle instances over %v: Redis ran %v, CPU %v; %d connections, used_memory %d B (%d B before the instances)",
					n, window, d, d.CPU, after.Clients-1, after.UsedMemory, empty.UsedMemory)
				b.ReportMetric(100*d.CPU.Seconds()/window.Seconds(), "redis-cpu-%core")
				if n > 0 {
					b.ReportMetric(float64(d.Calls())/window.Seconds()/float64(n), "cmds/s/instance")
					b.ReportMetric(float64(d.CPU.Microseconds())/window.Seconds()/float64(n), "redis-cpu-us/s/instance")
					b.ReportMetric(float64(after.Clients-1)/float64(n), "conns/instance")
					b.ReportMetric(float64(after.UsedMemory-empty.UsedMemory)/float64(n), "mem-B/instance")
				}
				b.ReportMetric(0, "ns/op")
			}
		})
	}
}
