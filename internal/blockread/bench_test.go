package blockread_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/blockread"
	"github.com/stargazer/lifecycle/internal/redistest"
)

// BenchmarkRead is the guard's cost on the hot path: one XREAD of a page of
// entries of the sizes the project writes (16 ops of about 400 bytes, as the
// control daemon reads; 512 events of about 250 bytes, as a Watcher reads),
// through a Stream's guarded copy (the RESP parse and the entries' sizes)
// and through an unguarded copy (go-redis alone), alternately.
//
//	go test -run '^$' -bench BenchmarkRead -benchmem -count 10 ./internal/blockread
func BenchmarkRead(b *testing.B) {
	rdb := redistest.Server(b).Client(b)
	ctx := context.Background()
	for i := range 16 {
		xadd(b, rdb, "ops", "id", fmt.Sprintf("%024x", i), "op", "pull", "target", "*", "args", `{"max_unavailable":1}`,
			"issued_at", "1796423923570", "ttl_ms", "30000", "nonce", strings.Repeat("n", 22),
			"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "sig", strings.Repeat("a", 64), "key_id", "01234567")
	}
	for i := range 512 {
		xadd(b, rdb, "events", "service", "demo", "instance", fmt.Sprintf("demo-%d", i), "event", "health_serving",
			"from", "serving_health", "to", "running", "phase", "", "degraded", "false", "time", "2026-12-04T22:38:44.228123456Z",
			"trace_id", "0af7651916cd43dd8448eb211c80319c")
	}
	// The components' limits: controlops's and registry's.
	for _, c := range []struct {
		key   string
		count int64
		lim   blockread.Limits
	}{{"ops", 16, blockread.Limits{Entry: 80 << 10, Fields: 32, Reply: 1 << 20}}, {"events", 512, blockread.Limits{Entry: 8 << 10, Fields: 32, Reply: 1 << 20}}} {
		s := blockread.NewStream(rdb, c.key, blockread.Retry, c.lim, time.Second)
		b.Cleanup(func() { _ = s.Close() })
		plain, _ := blockread.NewClient(rdb, blockread.Retry, blockread.Limits{})
		b.Cleanup(func() { _ = plain.Close() })
		b.Run(c.key+"/guarded", func(b *testing.B) {
			for b.Loop() {
				p, err := s.Read(ctx, "0-0", c.count, 0)
				if err != nil || int64(len(p.Entries)) != c.count {
					b.Fatalf("%d entries, %v", len(p.Entries), err)
				}
			}
		})
		b.Run(c.key+"/unguarded", func(b *testing.B) {
			for b.Loop() {
				st, err := plain.XRead(ctx, &redis.XReadArgs{Streams: []string{c.key, "0-0"}, Count: c.count, Block: -1}).Result()
				if err != nil || int64(len(st[0].Messages)) != c.count {
					b.Fatalf("%v", err)
				}
			}
		})
	}
}

// BenchmarkIdle compares what waiting for new entries costs Redis and how
// late a new entry is seen: 100 readers blocked in XREAD through their
// guarded copies (what the components do) against 100 readers polling with
// the Scan script every 10ms, 100ms or 1s (design option b). For each it
// reports Redis's CPU (less an empty Redis's, measured first) and commands
// per reader and second over an idle window (IDLE_WINDOW, 10s by default),
// and then the delay from an XADD to a reader seeing it, p50 and p99 over 20
// entries seen by every reader, each added at a random moment.
//
//	go test -run '^$' -bench BenchmarkIdle -benchtime 1x ./internal/blockread
func BenchmarkIdle(b *testing.B) {
	window := 10 * time.Second
	if v := os.Getenv("IDLE_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		window = d
	}
	const readers = 100
	srv := redistest.Server(b, "--maxclients", "10000")
	admin := srv.Client(b)
	idle := func() (redistest.Stats, float64) {
		before, err := redistest.ReadStats(context.Background(), admin)
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(window) // the idle window being measured
		after, err := redistest.ReadStats(context.Background(), admin)
		if err != nil {
			b.Fatal(err)
		}
		return after.Since(before), after.Time.Sub(before.Time).Seconds()
	}
	empty, emptySecs := idle()
	emptyCPU := float64(empty.CPU.Microseconds()) / emptySecs
	b.Logf("an empty Redis: %.0f µs of CPU a second", emptyCPU)
	for _, mode := range []struct {
		name string
		poll time.Duration // 0: blocking reads
	}{{"block", 0}, {"poll-10ms", 10 * time.Millisecond}, {"poll-100ms", 100 * time.Millisecond}, {"poll-1s", time.Second}} {
		b.Run(mode.name, func(b *testing.B) {
			key := "idle-" + mode.name
			xadd(b, admin, key, "n", "0")
			ctx, cancel := context.WithCancel(context.Background())
			seen := make(chan time.Duration, readers*32)
			var wg sync.WaitGroup
			for range readers {
				c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
				s := blockread.NewStream(c, key, blockread.Retry, lim, time.Second)
				wg.Go(func() {
					defer c.Close()
					defer s.Close()
					pos := "0-0"
					for ctx.Err() == nil {
						var p blockread.Page
						var err error
						if mode.poll == 0 {
							p, err = s.Read(ctx, pos, 16, 30*time.Second)
						} else {
							p, err = blockread.Scan(ctx, c, key, "("+pos, "+", 16, false, lim)
						}
						if err != nil {
							return
						}
						for _, e := range p.Entries {
							pos = e.ID
							if t, ok := e.Values["t"].(string); ok {
								sent, _ := strconv.ParseInt(t, 10, 64)
								seen <- time.Since(time.Unix(0, sent))
							}
						}
						if mode.poll > 0 && len(p.Entries) == 0 {
							t := time.NewTimer(mode.poll)
							select {
							case <-t.C:
							case <-ctx.Done():
							}
							t.Stop()
						}
					}
				})
			}
			defer func() {
				cancel()
				_ = admin.Do(context.Background(), "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes").Err() // ends the blocked reads
				wg.Wait()
			}()
			time.Sleep(2 * time.Second) // let every reader connect and settle; benchmark setup, not synchronisation
			d, secs := idle()
			var lat []time.Duration
			for range 20 {
				// A random moment, so that polls are not in step with the adds.
				time.Sleep(time.Duration(rand.Int64N(int64(max(mode.poll, 10*time.Millisecond))))) // benchmark setup
				xadd(b, admin, key, "t", strconv.FormatInt(time.Now().UnixNano(), 10))
				for range readers {
					lat = append(lat, <-seen)
				}
			}
			slices.Sort(lat)
			b.ReportMetric((float64(d.CPU.Microseconds())/secs-emptyCPU)/readers, "redis-cpu-us/reader-s")
			b.ReportMetric(float64(d.Calls())/secs/readers, "cmds/reader-s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(0, "ns/op")
			b.Logf("%s: %d readers, %.1fs idle: %s", mode.name, readers, secs, d)
		})
	}
}

// BenchmarkFanOut is what no client can spare Redis: 20 readers blocked in
// XREAD through their guarded copies, and one entry of 100 MB added. Redis
// prepares each reader's reply at once, whatever the reader does with it;
// each guard refuses it within 32 KB and closes the connection. It reports
// Redis's CPU and its peak memory (INFO used_memory_peak, reset first), and
// how long until every reader had reported the entry.
//
//	go test -run '^$' -bench BenchmarkFanOut -benchtime 1x ./internal/blockread
func BenchmarkFanOut(b *testing.B) {
	const readers = 20
	srv := redistest.Server(b)
	admin := srv.Client(b)
	start := xadd(b, admin, "s", "n", "0")
	payload := strings.Repeat("x", 100<<20)
	limits := blockread.Limits{Entry: 8 << 10, Fields: 32, Reply: 1 << 20}
	var wg sync.WaitGroup
	for range readers {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		s := blockread.NewStream(c, "s", blockread.NoRetry, limits, time.Second)
		wg.Go(func() {
			defer c.Close()
			defer s.Close()
			p, err := s.Read(context.Background(), start, 16, time.Minute)
			if err != nil || len(p.Entries) != 1 || !p.Entries[0].Oversized {
				b.Errorf("%+v %v", p, err)
			}
		})
	}
	for !strings.Contains(admin.Info(context.Background(), "clients").Val(), "blocked_clients:"+strconv.Itoa(readers)+"\r\n") {
		time.Sleep(5 * time.Millisecond) // benchmark setup: until every reader blocks
	}
	if err := admin.Do(context.Background(), "MEMORY", "PURGE").Err(); err != nil {
		b.Fatal(err)
	}
	if err := admin.ConfigResetStat(context.Background()).Err(); err != nil {
		b.Fatal(err)
	}
	before, err := redistest.ReadStats(context.Background(), admin)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	xadd(b, admin, "s", "f", payload)
	wg.Wait()
	took := time.Since(t0)
	after, err := redistest.ReadStats(context.Background(), admin)
	if err != nil {
		b.Fatal(err)
	}
	peak, _ := strconv.ParseFloat(infoField(admin.Info(context.Background(), "memory").Val(), "used_memory_peak"), 64)
	b.ReportMetric(after.Since(before).CPU.Seconds(), "redis-cpu-s")
	b.ReportMetric(peak/(1<<30), "redis-peak-GiB")
	b.ReportMetric(took.Seconds(), "all-reported-s")
	b.ReportMetric(0, "ns/op")
}

func infoField(info, name string) string {
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), name+":"); ok {
			return v
		}
	}
	return ""
}
