package fleettest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/service"
)

// latencies is a go-redis hook that records how long each command and each
// pipeline took, as the caller saw it: waiting for a pooled connection, the
// round trip and Redis's work.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *latencies) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		l.add(time.Since(start))
		return err
	}
}

func (l *latencies) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		l.add(time.Since(start))
		return err
	}
}

// quantile returns the q-quantile of ds (sorted in place).
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}

// stormSize is how many instances boot at once in BenchmarkRestartStorm.
const stormSize = 1000

// BenchmarkRestartStorm boots 1,000 lifecycle instances at once against one
// real redis-server, as a fleet-wide restart does, with no boot jitter and
// with the default jitter of 2s (each instance waits a random time in [0, 2s]
// before its Redis ping), and reports side by side:
//
//   - peak-cmds/s: the most commands Redis ran per second over one sample
//     (INFO commandstats read every 100ms and divided by the server's own time
//     between two reads; a script's commands count);
//   - p50-ms, p99-ms, max-ms: the time each Redis call (a command or a
//     pipeline) took as the instances saw it, from a go-redis hook on each
//     instance's client: the ping, the status writes of every transition, the
//     registration, the control-ops daemon's start and the health server's
//     first check;
//   - boot-s: from the start to the last instance running.
//
// Each instance is an instance as a process has it (its own client, its own
// daemon connection, a health server on a loopback port); all 1,000 run in
// this one process, on the same 2 cores as Redis, so the latencies include
// waiting for a core. The boot's Redis traffic is the real one.
//
//	go test -run '^$' -bench RestartStorm -benchtime 1x -timeout 20m ./internal/fleettest
func BenchmarkRestartStorm(b *testing.B) {
	for _, jitter := range []time.Duration{0, service.DefaultBootJitter} {
		b.Run(fmt.Sprintf("jitter=%v", jitter), func(b *testing.B) {
			for range b.N {
				storm(b, jitter)
			}
		})
	}
}

func storm(b *testing.B, jitter time.Duration) {
	b.StopTimer()
	srv := redistest.Server(b, "--maxclients", "10000")
	lat := &latencies{}
	nodes := make([]*node, stormSize)
	for i := range nodes {
		c := newClient(b, srv.Addr())
		c.AddHook(lat)
		n := &node{done: make(chan error, 1), logs: &syncBuffer{}}
		in, err := service.New(nopService{}, instanceOptions(c, "storm", fmt.Sprintf("i-%04d", i), n.logs,
			service.WithBootJitter(jitter))...)
		if err != nil {
			b.Fatal(err)
		}
		n.in = in
		nodes[i] = n
	}
	defer func() {
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Go(func() { n.shutdown(b) })
		}
		wg.Wait()
	}()

	// The sampler reads INFO every 100ms until the storm is over.
	watch := srv.Client(b)
	ctx := context.Background()
	var peak float64
	var total int64
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		prev, err := redistest.ReadStats(ctx, watch)
		if err != nil {
			b.Error(err)
			return
		}
		first := prev
		for {
			select {
			case <-stop:
				if last, err := redistest.ReadStats(ctx, watch); err == nil {
					total = last.Since(first).Calls()
				}
				return
			case <-t.C:
			}
			st, err := redistest.ReadStats(ctx, watch)
			if err != nil {
				b.Error(err)
				return
			}
			// Divided by the server's time between the two replies: a reply
			// may reach this busy process late.
			if dt := st.Time.Sub(prev.Time); dt > 0 {
				peak = max(peak, float64(st.Since(prev).Calls())/dt.Seconds())
			}
			prev = st
		}
	}()

	b.StartTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, stormSize)
	for _, n := range nodes {
		wg.Go(func() {
			if err := n.in.Boot(ctx); err != nil {
				errs <- fmt.Errorf("%s: %w\n%s", n.in.ID(), err, n.logs.String())
				return
			}
			go func() { n.done <- n.in.Run(ctx) }()
		})
	}
	wg.Wait()
	booted := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatalf("boot: %v", err)
	}
	// Let the last writes land (status updates are asynchronous), then stop
	// sampling.
	time.Sleep(time.Second) // the tail of the storm, in the sampled window
	close(stop)
	<-sampled

	lat.mu.Lock()
	ds := slices.Clone(lat.d)
	lat.mu.Unlock()
	p50, p99, worst := quantile(ds, 0.5), quantile(ds, 0.99), quantile(ds, 1)
	b.Logf("jitter %v: %d instances running after %v; Redis ran %d commands, peak %.0f/s; %d calls seen by the instances: p50 %v, p99 %v, max %v",
		jitter, stormSize, booted.Round(time.Millisecond), total, peak, len(ds), p50, p99, worst)
	b.ReportMetric(peak, "peak-cmds/s")
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(worst.Microseconds())/1000, "max-ms")
	b.ReportMetric(booted.Seconds(), "boot-s")
	b.ReportMetric(0, "ns/op")
}
