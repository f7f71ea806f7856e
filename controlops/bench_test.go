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
// its final results, for 1, 100 and 1,000 daemons on one real redis-server,
// beside a PING round trip and, as the floor for 1,000 results, one pipeline
// of 1,000 result XADDs read back with one XRANGE. One daemon is measured with
// the default block (30s) and with a block of 1s, the default before: an op is
// delivered as soon as it is added, whatever the block. It reports p50 and p99
// in ms.
//
//	go test -run XXX -bench OpToResult -benchtime 200x ./controlops
func BenchmarkOpToResult(b *testing.B) {
	srv := redistest.Server(b, "--maxclients", "10000")
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
	b.Run("floor-pipelined-1000", func(b *testing.B) {
		rdb := srv.Client(b)
		ctx := context.Background()
		svc := "floor"
		res := Result{OpID: "0123456789abcdef01234567", Op: OpPull, Entry: "1-0", Status: StatusDone,
			State: "running", PID: 4242, At: time.Now(), TraceID: "0af7651916cd43dd8448eb211c80319c", KeyID: "01234567"}
		lat := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			start := time.Now()
			pipe := rdb.Pipeline()
			var first *redis.StringCmd
			for k := 0; k < 1000; k++ {
				res.Instance = fmt.Sprintf("i-%d", k)
				cmd := pipe.XAdd(ctx, &redis.XAddArgs{Stream: ResultsKey(svc), MaxLen: DefaultResultsMaxLen, Approx: true, Values: res.values()})
				if k == 0 {
					first = cmd
				}
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			got, err := rdb.XRange(ctx, ResultsKey(svc), first.Val(), "+").Result()
			if err != nil || len(got) < 1000 {
				b.Fatalf("read back %d results, %v", len(got), err)
			}
			lat = append(lat, time.Since(start))
		}
		report(b, lat)
	})
	for _, c := range []struct {
		name  string
		n     int
		block time.Duration // 0: the default
	}{
		{"daemons=1/block=1s", 1, time.Second},
		{"daemons=1", 1, 0},
		{"daemons=100", 100, 0},
		{"daemons=1000", 1000, 0},
	} {
		b.Run(c.name, func(b *testing.B) {
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 2*c.n + 10})
			b.Cleanup(func() { _ = rdb.Close() })
			svc := fmt.Sprintf("bench%d-%v", c.n, c.block)
			opts := []Option{WithKey(testKey)}
			if c.block > 0 {
				opts = append(opts, WithBlock(c.block))
			}
			instances := make([]string, c.n)
			for i := range instances {
				instances[i] = fmt.Sprintf("i-%d", i)
				startDaemon(b, rdb, newTarget(svc, instances[i]), opts...)
			}
			cl := NewClient(rdb, testKey)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				op, err := cl.Send(context.Background(), svc, "echo", TargetAll, nil)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				_, err = cl.Wait(ctx, svc, op, instances, nil)
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
