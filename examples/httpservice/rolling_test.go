package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/balancer"
	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// The measurement behind the design: three httpservice processes on one real
// redis-server, a client calling them through registry.Watcher and the
// balancer at a steady rate, and `sgctl restart httpservice --wait` in the
// middle: sgctl's default, one instance at a time (--max-unavailable 1).
//
// Knobs (environment):
//
//	ROLLING_RESTART_LOAD=20s     the load's length, the restart starting at a
//	                             quarter of it (BENCHMARKS.md's figures); by
//	                             default the load runs from 1s before the
//	                             restart to 1s after it
//	ROLLING_RESTART_RATE=200     requests per second
//	ROLLING_RESTART_ROUNDS=3     rolling restarts in a row on the same fleet
//	                             (default 3 with CI=true, else 1)

const rollingKey = "rolling-restart-test-key-0123"

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func envDuration(t *testing.T, name string) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a duration > 0", name, v)
	}
	return d
}

// sample is one request of the load.
type sample struct {
	at      time.Duration // since the load began
	latency time.Duration
	err     error
	by      string // the instance that answered
}

// round is what one rolling restart under load measured.
type round struct {
	samples            []sample      // through the watcher and the balancer
	polled             []sample      // through the polling client (see poller)
	restartAt, restart time.Duration // when the restart began (since the load began), and how long it took
	refused            int64         // dials refused (each retried on another instance)
}

func (r round) failed() []sample { return failed(r.samples) }

func failed(samples []sample) []sample {
	var out []sample
	for _, s := range samples {
		if s.err != nil {
			out = append(out, s)
		}
	}
	return out
}

// during returns the latencies of the requests sent while the restart ran.
func (r round) during() []time.Duration {
	var out []time.Duration
	for _, s := range r.samples {
		if s.at >= r.restartAt && s.at <= r.restartAt+r.restart && s.err == nil {
			out = append(out, s.latency)
		}
	}
	return out
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func (r round) summary() string {
	by := map[string]int{}
	for _, s := range r.samples {
		if s.err == nil {
			by[s.by]++
		}
	}
	var all []time.Duration
	for _, s := range r.samples {
		if s.err == nil {
			all = append(all, s.latency)
		}
	}
	d := r.during()
	return fmt.Sprintf("balancer: %d requests, %d failed, %d dials refused and retried; restart took %v; "+
		"latency p50 %v p99 %v max %v; during the restart (%d requests) p50 %v p99 %v max %v; answered by %v; "+
		"polling client (registry read every %v, no retry): %d requests, %d failed",
		len(r.samples), len(r.failed()), r.refused, r.restart.Round(time.Millisecond),
		percentile(all, .5).Round(10*time.Microsecond), percentile(all, .99).Round(10*time.Microsecond), percentile(all, 1).Round(10*time.Microsecond),
		len(d), percentile(d, .5).Round(10*time.Microsecond), percentile(d, .99).Round(10*time.Microsecond), percentile(d, 1).Round(10*time.Microsecond), by,
		pollEvery, len(r.polled), len(failed(r.polled)))
}

// pollEvery is how often the polling client re-reads the registry.
const pollEvery = 500 * time.Millisecond

// poller is the client the watcher replaces: it re-reads the registry's
// listing every pollEvery, as a load balancer polls health checks or DNS,
// round-robins over the running instances it last saw, and never retries.
// It shows when a drain delay matters: when a client's view lags.
type poller struct {
	base  http.RoundTripper
	mu    sync.Mutex
	addrs []string
	next  atomic.Uint64
}

// follow re-reads the listing until ctx ends.
func (p *poller) follow(ctx context.Context, reg *registry.Registry) {
	for {
		if ins, err := reg.List(ctx, "httpservice"); err == nil {
			var addrs []string
			for _, in := range ins {
				if in.Status == registry.StatusRunning && in.Addr != "" {
					addrs = append(addrs, in.Addr)
				}
			}
			p.mu.Lock()
			p.addrs = addrs
			p.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pollEvery): // the polling client's period
		}
	}
}

func (p *poller) RoundTrip(req *http.Request) (*http.Response, error) {
	p.mu.Lock()
	addrs := p.addrs
	p.mu.Unlock()
	if len(addrs) == 0 {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("no instance")
	}
	r := req.Clone(req.Context())
	r.URL.Host = addrs[int(p.next.Add(1)%uint64(len(addrs)))]
	return p.base.RoundTrip(r)
}

// refusals counts the dials the base transport saw refused, under the
// balancer: each one is a request the balancer sent again elsewhere.
type refusals struct {
	base http.RoundTripper
	n    atomic.Int64
}

func (r *refusals) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	if err != nil && strings.Contains(err.Error(), "connection refused") {
		r.n.Add(1)
	}
	return resp, err
}

// rollingFleet starts three httpservice processes on srv, with drainDelay
// ("" for none), and waits until a watcher sees them running.
func rollingFleet(t *testing.T, srv *redistest.Srv, drainDelay string) (*registry.Watcher, []*proctest.Proc) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs three httpservice processes against a real redis-server")
	}
	var procs []*proctest.Proc
	for i := 1; i <= 3; i++ {
		env := []string{"REDIS_URL=" + srv.URL(), "SG_INSTANCE_ID=httpservice-" + strconv.Itoa(i), "SG_HEALTH_HOST=127.0.0.1",
			"SG_CONTROL_KEY=" + rollingKey}
		if drainDelay != "" {
			env = append(env, "SG_DRAIN_DELAY="+drainDelay)
		}
		procs = append(procs, start(t, env...))
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	w, err := registry.New(rdb).Watch("httpservice")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for len(w.Running()) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the watcher sees %d running instances, want 3", len(w.Running()))
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
	return w, procs
}

// rollingRestart sends GETs through the balancer over w at rate per second
// while `sgctl restart httpservice --wait` (its default: one instance at a
// time) runs, and
// returns what they met. With load > 0 the load lasts that long, the restart
// beginning at a quarter of it; otherwise from 1s before the restart to 1s
// after it. The load always covers the whole restart.
func rollingRestart(t *testing.T, srv *redistest.Srv, w *registry.Watcher, rate int, load time.Duration) round {
	t.Helper()
	base := &refusals{base: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer base.base.(*http.Transport).CloseIdleConnections()
	client := &http.Client{Transport: balancer.New(w).RoundTripper(base), Timeout: 5 * time.Second}

	pollBase := &http.Transport{MaxIdleConnsPerHost: 16}
	defer pollBase.CloseIdleConnections()
	poll := &poller{base: pollBase}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()
	pollCtx, stopPolling := context.WithCancel(context.Background())
	var polling sync.WaitGroup
	polling.Add(1)
	go func() { defer polling.Done(); poll.follow(pollCtx, registry.New(rdb)) }()
	defer func() { stopPolling(); polling.Wait() }()
	polled := &http.Client{Transport: poll, Timeout: 5 * time.Second}

	lead := time.Second
	if load > 0 {
		lead = load / 4
	}
	var (
		mu      sync.Mutex
		samples []sample
		pol     []sample
		wg      sync.WaitGroup
		r       round
	)
	// The restart runs on the test's goroutine, from this loop: a Fatal
	// from proctest must not happen on another.
	sgctl := proctest.Build(t, proctest.Module+"/cmd/sgctl")
	began := time.Now()
	startRestart := time.After(lead) // the load before the restart: the scenario's timing
	var restart *proctest.Proc
	var restarting <-chan struct{} // the restart's Done, once it began

	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var over <-chan time.Time // set once the restart is done: the tail
	for {
		select {
		case <-startRestart:
			r.restartAt = time.Since(began)
			restart = proctest.Start(t, proctest.Cmd{Bin: sgctl, Name: "sgctl restart",
				Args: []string{"restart", "httpservice", "--wait", "--timeout", "90s"},
				Env:  []string{"REDIS_URL=" + srv.URL(), "SG_CONTROL_KEY=" + rollingKey}})
			restarting = restart.Done()
			continue
		case <-restarting:
			r.restart = time.Since(began) - r.restartAt
			restarting = nil
			if code := restart.Wait(t); code != 0 {
				t.Errorf("sgctl restart: exit code %d\n%s", code, restart.Output())
			}
			if !strings.Contains(restart.Output(), "at most 1 out of running at once") {
				t.Errorf("sgctl restart without --max-unavailable does not say it restarts one at a time:\n%s", restart.Output())
			}
			tail := time.Second
			if load > 0 {
				tail = max(load-time.Since(began), time.Second)
			}
			over = time.After(tail)
			continue
		case <-over:
		case <-tick.C:
			at := time.Since(began)
			wg.Add(2)
			go func() {
				defer wg.Done()
				s := send(client, at)
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			}()
			go func() {
				defer wg.Done()
				s := send(polled, at)
				mu.Lock()
				pol = append(pol, s)
				mu.Unlock()
			}()
			continue
		}
		break
	}
	wg.Wait()
	r.samples, r.polled, r.refused = samples, pol, base.n.Load()
	return r
}

// send makes one GET of the load through c.
func send(c *http.Client, at time.Duration) sample {
	s := sample{at: at}
	t0 := time.Now()
	resp, err := c.Get("http://httpservice/")
	if err == nil {
		var b []byte
		b, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		s.by = strings.TrimSpace(string(b))
	}
	s.latency, s.err = time.Since(t0), err
	return s
}

// restarted checks that every process replaced itself: one more boot each.
func restarted(t *testing.T, procs []*proctest.Proc, boots int) {
	t.Helper()
	for _, p := range procs {
		deadline := time.Now().Add(30 * time.Second)
		for strings.Count(p.Output(), `msg="boot completed"`) < boots {
			if time.Now().After(deadline) {
				t.Fatalf("%s completed %d boots, want %d", p.Name(), strings.Count(p.Output(), `msg="boot completed"`), boots)
			}
			time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
		}
	}
}

func TestRollingRestartWithADrainDelayFailsNoRequest(t *testing.T) {
	rounds := envInt(t, "ROLLING_RESTART_ROUNDS", map[bool]int{true: 3, false: 1}[os.Getenv("CI") == "true"])
	rate := envInt(t, "ROLLING_RESTART_RATE", 200)
	load := envDuration(t, "ROLLING_RESTART_LOAD")
	srv := redistest.Server(t)
	w, procs := rollingFleet(t, srv, "1s")
	for i := 1; i <= rounds; i++ {
		r := rollingRestart(t, srv, w, rate, load)
		restarted(t, procs, i+1)
		t.Logf("round %d/%d, SG_DRAIN_DELAY=1s, %d/s: %s", i, rounds, rate, r.summary())
		for _, s := range r.failed() {
			t.Errorf("request at %v (the restart ran from %v for %v) failed: %v", s.at.Round(time.Millisecond), r.restartAt.Round(time.Millisecond), r.restart.Round(time.Millisecond), s.err)
		}
		if len(r.during()) == 0 {
			t.Error("no request was sent during the restart: the measurement does not cover it")
		}
	}
}

func TestRollingRestartWithoutADrainDelayReportsFailedRequests(t *testing.T) {
	rate := envInt(t, "ROLLING_RESTART_RATE", 200)
	load := envDuration(t, "ROLLING_RESTART_LOAD")
	srv := redistest.Server(t)
	w, procs := rollingFleet(t, srv, "")
	r := rollingRestart(t, srv, w, rate, load)
	restarted(t, procs, 2)
	// Not asserted: this is the figure that says when the delay matters.
	t.Logf("SG_DRAIN_DELAY unset, %d/s: %s", rate, r.summary())
	for _, s := range r.failed() {
		t.Logf("failed at %v: %v", s.at.Round(time.Millisecond), s.err)
	}
	if len(r.during()) == 0 {
		t.Error("no request was sent during the restart: the measurement does not cover it")
	}
}
