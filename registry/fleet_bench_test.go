package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// fleetWindow is how long BenchmarkFleet watches the idle fleet: the
// environment variable FLEET_WINDOW (a duration), 30s by default, which is
// three heartbeats at the default TTL.
func fleetWindow(b *testing.B) time.Duration {
	if v := os.Getenv("FLEET_WINDOW"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.Fatalf("FLEET_WINDOW=%q: want a duration such as 30s", v)
		}
		return d
	}
	return 30 * time.Second
}

// bootStates are the states a member goes through before Register, as a
// lifecycle instance's boot does; serving_health and running follow.
var bootStates = []string{"init", "connecting", "configuring", "instrumenting", "loading_modules", "building_adapters", "starting", "registering"}

func fleetEntry(service, id, status string) registry.Entry {
	return registry.Entry{Service: service, Instance: id, Status: status, Host: "host-" + id, PID: 4242,
		Version: "v1.2.3", StartedAt: time.Now(), HealthAddr: "10.0.0.1:9090", Control: "signed"}
}

// startFleet registers n members of service as n processes would: each with
// a Registry of its own (so its first writes carry the scripts' text), a
// Member whose writer delivers the boot's status updates and events, then
// Register, two more updates (serving_health, running) and the heartbeat.
// They share c. It returns once every member delivered everything.
func startFleet(b *testing.B, c *redis.Client, service string, n int, opts ...registry.Option) []*registry.Member {
	b.Helper()
	members := make([]*registry.Member, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	next := make(chan int)
	for range 64 {
		wg.Go(func() {
			for i := range next {
				id := fmt.Sprintf("i-%05d", i)
				m, err := registry.New(c, opts...).Member(fleetEntry(service, id, bootStates[0]))
				if err == nil {
					for k, st := range bootStates[1:] {
						m.Update(fleetEntry(service, id, st), &registry.Event{Event: "to_" + st, From: bootStates[k], To: st})
					}
					ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
					err = m.Register(ctx, fleetEntry(service, id, "registering"))
					cancel()
					m.Update(fleetEntry(service, id, "serving_health"), &registry.Event{Event: "registered", From: "registering", To: "serving_health"})
					m.Update(fleetEntry(service, id, "running"), &registry.Event{Event: "serving", From: "serving_health", To: "running"})
					m.StartHeartbeat()
				}
				mu.Lock()
				members[i] = m
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		stopFleet(members)
		b.Fatalf("registering the fleet: %v", firstErr)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for _, m := range members {
		for st := m.Stats(); st.EntryPending || st.QueuedEvents > 0; st = m.Stats() {
			if time.Now().After(deadline) {
				stopFleet(members)
				b.Fatalf("fleet not delivered within 5 minutes: %+v", st)
			}
			time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
		}
	}
	return members
}

// stopFleet closes every member (nil ones skipped).
func stopFleet(members []*registry.Member) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, m := range members {
		if m == nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = m.Close(ctx)
		})
	}
	wg.Wait()
}

// fleetClient is the client the fleet shares: a pool big enough for 64
// registering workers and the writers they wake, and a pool timeout that
// outlasts a burst of 10,000 heartbeats.
func fleetClient(b *testing.B) *redis.Client {
	benchClient(b) // skips without a server, flushes it
	c := redis.NewClient(&redis.Options{Addr: benchSrv.Addr(), PoolSize: 256, PoolTimeout: 30 * time.Second})
	b.Cleanup(func() { _ = c.Close() })
	return c
}

func readStats(b *testing.B, c *redis.Client) redistest.Stats {
	b.Helper()
	st, err := redistest.ReadStats(context.Background(), c)
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// medianMS runs fn k times and returns the median time in ms.
func medianMS(b *testing.B, k int, fn func()) float64 {
	ds := make([]time.Duration, k)
	for i := range ds {
		start := time.Now()
		fn()
		ds[i] = time.Since(start)
	}
	slices.Sort(ds)
	b.Logf("%d runs: min %v, median %v, max %v", k, ds[0], ds[k/2], ds[k-1])
	return float64(ds[k/2].Microseconds()) / 1000
}

// BenchmarkFleet registers 1,000 and 10,000 members of one service on one
// real redis-server, each as a process would (its own Registry, writer and
// heartbeat, the default TTL of 30s; one shared client), and measures:
//
//   - register-eval, register-evalsha: registering the whole fleet (each
//     member's boot updates, Register, two more updates), with the scripts
//     sent as text every time, as the registry did, and by SHA1, as it does:
//     Redis CPU (reg-cpu-us/member), commands (calls/member, a script's
//     commands included) and bytes received (input-B/member) per member.
//   - idle: the registered fleet over FLEET_WINDOW (default 30s) with only the
//     heartbeats running: commands per member per second (INFO commandstats),
//     Redis CPU in % of one core, the members one Redis holds at 50% of a
//     core at that rate (a linear extrapolation), memory per member (MEMORY
//     USAGE of its entry and its share of the index), and the events stream
//     at its cap (events-KB, events-len).
//   - instances: registry.Instances of the whole service (median of 20).
//   - sgctl-ps-json: `sgctl ps <service> --json` as a process (built from
//     ./cmd/sgctl; median of 10), beside sgctl-ps-json-empty, the same
//     command for a service with no instances: what starting the process
//     costs.
//
// The numbers are for one process driving the whole fleet on the machine
// that also runs Redis; run with -benchtime 1x:
//
//	go test -run '^$' -bench Fleet -benchtime 1x -timeout 30m ./registry
func BenchmarkFleet(b *testing.B) {
	sgctl := buildSgctl(b)
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			c := fleetClient(b)
			ctx := context.Background()
			for _, mode := range []string{"eval", "evalsha"} {
				b.Run("register-"+mode, func(b *testing.B) {
					var opts []registry.Option
					if mode == "eval" {
						opts = append(opts, registry.WithScriptText())
					}
					for range b.N {
						b.StopTimer()
						if err := c.FlushAll(ctx).Err(); err != nil {
							b.Fatal(err)
						}
						before := readStats(b, c)
						b.StartTimer()
						start := time.Now()
						ms := startFleet(b, c, "fleet", n, opts...)
						took := time.Since(start)
						b.StopTimer()
						d := readStats(b, c).Since(before)
						stopFleet(ms)
						b.Logf("%s: %d members registered in %v; Redis ran %v", mode, n, took, d)
						b.ReportMetric(float64(took.Milliseconds()), "wall-ms")
						b.ReportMetric(float64(d.CPU.Microseconds())/float64(n), "reg-cpu-us/member")
						b.ReportMetric(float64(d.Calls())/float64(n), "calls/member")
						b.ReportMetric(float64(d.NetInput)/float64(n), "input-B/member")
					}
				})
			}

			if err := c.FlushAll(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			members := startFleet(b, c, "fleet", n)
			defer stopFleet(members)

			b.Run("idle", func(b *testing.B) {
				window := fleetWindow(b)
				for range b.N {
					before := readStats(b, c)
					time.Sleep(window) // the measurement window
					d := readStats(b, c).Since(before)
					perMember := float64(d.Calls()) / window.Seconds() / float64(n)
					core := d.CPU.Seconds() / window.Seconds()
					b.Logf("%d idle members over %v: Redis ran %v; %.1f%% of a core", n, window, d, 100*core)
					b.ReportMetric(perMember, "cmds/s/member")
					b.ReportMetric(100*core, "redis-cpu-%core")
					if core > 0 {
						b.ReportMetric(0.5/(core/float64(n)), "members-at-half-core")
					}
				}
				entryBytes, indexBytes := memoryOf(b, c, "fleet", n)
				b.ReportMetric(float64(entryBytes+indexBytes)/float64(n), "mem-B/member")
				evBytes, err := c.MemoryUsage(ctx, registry.EventsKey, 0).Result()
				if err != nil {
					b.Fatal(err)
				}
				evLen := c.XLen(ctx, registry.EventsKey).Val()
				b.Logf("entries %d B, index %d B, %s %d entries in %d B (cap ~%d)", entryBytes, indexBytes, registry.EventsKey, evLen, evBytes, registry.DefaultEventsMaxLen)
				b.ReportMetric(float64(evBytes)/1024, "events-KB")
				b.ReportMetric(float64(evLen), "events-len")
				b.ReportMetric(0, "ns/op")
			})

			b.Run("instances", func(b *testing.B) {
				r := registry.New(c)
				for range b.N {
					b.ReportMetric(medianMS(b, 20, func() {
						es, err := r.Instances(ctx, "fleet")
						if err != nil || len(es) != n {
							b.Fatalf("Instances: %d entries, %v; want %d", len(es), err, n)
						}
					}), "median-ms")
				}
				b.ReportMetric(0, "ns/op")
			})

			for _, svc := range []string{"fleet", "empty"} {
				name := "sgctl-ps-json"
				if svc == "empty" {
					name += "-empty"
				}
				b.Run(name, func(b *testing.B) {
					for range b.N {
						b.ReportMetric(medianMS(b, 10, func() { runPs(b, sgctl, svc, n) }), "median-ms")
					}
					b.ReportMetric(0, "ns/op")
				})
			}
		})
	}
}

// memoryOf returns MEMORY USAGE of the n entries of service, summed, and of
// its index.
func memoryOf(b *testing.B, c *redis.Client, service string, n int) (entries, index int64) {
	b.Helper()
	ctx := context.Background()
	pipe := c.Pipeline()
	cmds := make([]*redis.IntCmd, n)
	for i := range n {
		cmds[i] = pipe.MemoryUsage(ctx, registry.EntryKey(service, fmt.Sprintf("i-%05d", i)), 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	for _, cmd := range cmds {
		entries += cmd.Val()
	}
	index, err := c.MemoryUsage(ctx, registry.IndexKey(service), 0).Result()
	if err != nil {
		b.Fatal(err)
	}
	return entries, index
}

// buildSgctl builds ./cmd/sgctl, once per test binary.
func buildSgctl(b *testing.B) string {
	b.Helper()
	benchClient(b) // skips without a server
	return proctest.Build(b, proctest.Module+"/cmd/sgctl")
}

// runPs runs `sgctl ps <service> --json` and checks it lists want instances
// (none for "empty").
func runPs(b *testing.B, sgctl, service string, want int) {
	p := proctest.Start(b, proctest.Cmd{Bin: sgctl, Args: []string{"ps", service, "--json"}, Env: []string{"REDIS_URL=" + benchSrv.URL()}})
	if code := p.Wait(b); code != 0 {
		b.Fatalf("sgctl ps %s --json: exit code %d", service, code)
	}
	var rows []json.RawMessage
	if err := json.Unmarshal([]byte(p.Stdout()), &rows); err != nil {
		b.Fatalf("sgctl ps --json output: %v", err)
	}
	if service == "empty" {
		want = 0
	}
	if len(rows) != want {
		b.Fatalf("sgctl ps %s --json listed %d instances, want %d", service, len(rows), want)
	}
}
