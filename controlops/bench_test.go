package controlops

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
)

// BenchmarkOpToResult measures the time from the XADD of an op to the last of
// its final results, for 1 and 100 daemons on one real redis-server, beside a
// PING round trip. It reports p50 and p99 in ms.
//
//	go test -run XXX -bench OpToResult -benchtime 200x ./controlops
func BenchmarkOpToResult(b *testing.B) {
	srv := redistest.Server(b)
	b.Run("ping", func(b *testing.B) {
		rdb := srv.Client(b)
		lat := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			start := time.Now()
			if err := rdb.Ping(context.Background()).Err(); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		report(b, lat)
	})
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("daemons=%d", n), func(b *testing.B) {
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 2*n + 10})
			b.Cleanup(func() { _ = rdb.Close() })
			svc := fmt.Sprintf("bench%d", n)
			instances := make([]string, n)
			for i := range instances {
				instances[i] = fmt.Sprintf("i-%d", i)
				startDaemon(b, rdb, newTarget(svc, instances[i]), WithKey(testKey))
			}
			c := NewClient(rdb, testKey)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				op, err := c.Send(context.Background(), svc, "echo", TargetAll, nil)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err = c.Wait(ctx, svc, op, instances, nil)
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			report(b, lat)
		})
	}
}

func report(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
