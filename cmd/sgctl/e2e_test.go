package main

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// startDemo starts cmd/demo as instance id against redisURL, with env's extra
// variables. A restart replaces the process image with exec, so the process
// (and its pid) stay the same across restarts.
func startDemo(t *testing.T, id, redisURL string, env ...string) *proctest.Proc {
	t.Helper()
	return proctest.Start(t, proctest.Cmd{Bin: proctest.Build(t, proctest.Module+"/cmd/demo"), Name: id, Env: append([]string{
		"REDIS_URL=" + redisURL,
		"SG_SERVICE_NAME=demo",
		"SG_INSTANCE_ID=" + id,
		"SG_HEALTH_PORT=0",
		"SG_HEALTH_HOST=127.0.0.1",
		"SG_BOOT_JITTER=0",
		"SG_CONTROL_KEY=" + testKey,
		"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none",
	}, env...)})
}

// demoFleet is demo instances on a real redis-server.
type demoFleet struct {
	srv     *redistest.Srv
	reg     *registry.Registry
	ids     []string // demo-1, demo-2, ...
	procs   map[string]*proctest.Proc
	running map[string]registry.Entry // by id: the entry first seen running
}

// startThreeDemos starts demo-1, demo-2 and demo-3 (startDemos).
func startThreeDemos(t *testing.T) *demoFleet {
	t.Helper()
	return startDemos(t, 3)
}

// startDemos starts n demo instances, demo-1 to demo-n, with env's extra
// variables, on a redis-server of their own and waits until all are
// running.
func startDemos(t *testing.T, n int, env ...string) *demoFleet {
	t.Helper()
	srv := redistest.Server(t)
	f := &demoFleet{srv: srv, reg: registry.New(srv.Client(t)), procs: map[string]*proctest.Proc{}, running: map[string]registry.Entry{}}
	for i := 1; i <= n; i++ {
		f.ids = append(f.ids, fmt.Sprintf("demo-%d", i))
	}
	for _, id := range f.ids {
		f.procs[id] = startDemo(t, id, srv.URL(), env...)
	}
	eventually(t, 30*time.Second, func() bool {
		entries, err := f.reg.Instances(t.Context(), "demo")
		if err != nil {
			return false
		}
		for _, e := range entries {
			if e.Status == "running" {
				f.running[e.Instance] = e
			}
		}
		return len(f.running) == len(f.ids)
	}, func() string { return fmt.Sprintf("running: %v", f.running) })
	return f
}

// outOfRunning polls the registry every few ms until stop, recording the
// largest number of the given instances not in running at once (an absent
// entry counts: the instance is between its deregistration and its next
// boot's first write).
type outOfRunning struct {
	mu      sync.Mutex
	max     int
	samples int
	at      []string // the instances out of running when max was reached
}

func (o *outOfRunning) poll(ctx context.Context, reg *registry.Registry, ids []string) {
	for ctx.Err() == nil {
		entries, err := reg.Instances(ctx, "demo")
		if err == nil {
			running := map[string]bool{}
			for _, e := range entries {
				running[e.Instance] = e.Status == "running"
			}
			var out []string
			for _, id := range ids {
				if !running[id] {
					out = append(out, id)
				}
			}
			o.mu.Lock()
			o.samples++
			if len(out) > o.max {
				o.max, o.at = len(out), out
			}
			o.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Millisecond):
		}
	}
}

func TestRollingRestartOfThreeDemoInstancesKeepsAtMostOneOutOfRunning(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmd/demo processes")
	}
	// All three running, each with its first process image.
	demos := startThreeDemos(t)
	srv, reg, ids, procs, before := demos.srv, demos.reg, demos.ids, demos.procs, demos.running

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var poller outOfRunning
	wg.Add(1)
	go func() { defer wg.Done(); poller.poll(ctx, reg, ids) }()
	stopPoller := func() { cancel(); wg.Wait() }
	defer stopPoller()

	env := map[string]string{"REDIS_URL": srv.URL(), "SG_CONTROL_KEY": testKey}
	start := time.Now()
	res := sgctl(t, t.Context(), env, nil, "restart", "demo", "--max-unavailable", "1", "--wait", "--timeout", "60s")
	took := time.Since(start)
	stopPoller()
	if res.code != exitOK {
		t.Fatalf("sgctl restart exit code %d, want 0", res.code)
	}

	for _, id := range ids {
		e, err := reg.Entry(t.Context(), "demo", id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		b := before[id]
		if e.Status != "running" || e.Instance != id {
			t.Errorf("%s: status %q, want running again under the same id", id, e.Status)
		}
		if !e.StartedAt.After(b.StartedAt) {
			t.Errorf("%s: started_at %v not after %v: not a fresh process image", id, e.StartedAt, b.StartedAt)
		}
		// exec keeps the process: the same pid, a new image.
		if e.PID != b.PID || e.PID != procs[id].PID() {
			t.Errorf("%s: pid %d, was %d, process %d: the restart should exec in place", id, e.PID, b.PID, procs[id].PID())
		}
		select {
		case <-procs[id].Done():
			t.Errorf("%s: the process exited instead of replacing itself", id)
		default:
		}
	}
	poller.mu.Lock()
	defer poller.mu.Unlock()
	t.Logf("rolling restart of 3 took %v; %d registry samples; at most %d out of running (%v)", took, poller.samples, poller.max, poller.at)
	if poller.max > 1 {
		t.Errorf("%d instances out of running at once (%v), want at most 1", poller.max, poller.at)
	}
	if poller.max == 0 {
		t.Errorf("the poller never saw an instance out of running in %d samples: it cannot vouch for the limit", poller.samples)
	}
}

func TestPullOfADemoInstanceIsRejectedWithTheWrongKeyAndRunsWithTheRightOne(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmd/demo processes")
	}
	srv := redistest.Server(t)
	reg := registry.New(srv.Client(t))
	startDemo(t, "demo-1", srv.URL())
	eventually(t, 30*time.Second, func() bool {
		e, err := reg.Entry(t.Context(), "demo", "demo-1")
		return err == nil && e.Status == "running"
	}, func() string { return "demo-1 never ran" })

	wrong := map[string]string{"REDIS_URL": srv.URL(), "SG_CONTROL_KEY": "another-key-of-16-bytes"}
	res := sgctl(t, t.Context(), wrong, nil, "pull", "demo", "--instance", "demo-1", "--wait", "--timeout", "20s")
	if res.code != exitFailed || !strings.Contains(res.stdout, "failed: demo-1 (rejected: ") {
		t.Fatalf("wrong key: got %d, want 1 with demo-1 rejected:\n%s", res.code, res.stdout)
	}
	right := map[string]string{"REDIS_URL": srv.URL(), "SG_CONTROL_KEY": testKey}
	res = sgctl(t, t.Context(), right, nil, "pull", "demo", "--instance", "demo-1", "--wait", "--timeout", "20s")
	if res.code != exitOK || !strings.Contains(res.stdout, "demo-1  done") {
		t.Fatalf("right key: got %d, want 0 with demo-1 done:\n%s", res.code, res.stdout)
	}
}

// readyz returns the status code of the instance's /readyz (0 when it does not answer).
func readyz(t *testing.T, e registry.Entry) int {
	t.Helper()
	resp, err := http.Get("http://" + e.HealthAddr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestDrainOfOneDemoInstanceTakesItOutOfRotationAndUndrainOrRestartBringsItBack(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmd/demo processes")
	}
	demos := startThreeDemos(t)
	srv, reg, ids, entries := demos.srv, demos.reg, demos.ids, demos.running
	env := map[string]string{"REDIS_URL": srv.URL(), "SG_CONTROL_KEY": testKey}
	// ready reports each instance's /readyz code and registry status.
	ready := func() map[string]string {
		out := map[string]string{}
		for _, id := range ids {
			e, err := reg.Entry(t.Context(), "demo", id)
			out[id] = fmt.Sprintf("%d %s %v", readyz(t, entries[id]), e.Status, err)
		}
		return out
	}

	res := sgctl(t, t.Context(), env, nil, "drain", "demo", "--instance", "demo-2", "--wait", "--timeout", "20s")
	if res.code != exitOK || !strings.Contains(res.stdout, "drain of demo: 1/1 instances done and draining") {
		t.Fatalf("sgctl drain: exit %d, want 0 with demo-2 done and draining:\n%s", res.code, res.stdout)
	}
	want := map[string]string{"demo-1": "200 running <nil>", "demo-2": "503 draining <nil>", "demo-3": "200 running <nil>"}
	if got := ready(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the drain: %v, want %v", got, want)
	}
	ps := sgctl(t, t.Context(), env, nil, "ps", "demo")
	if !regexp.MustCompile(`(?m)^demo\s+demo-2\s+draining\s`).MatchString(ps.stdout) {
		t.Errorf("sgctl ps does not show demo-2 draining:\n%s", ps.stdout)
	}
	// A drain to the whole service skips the drained one and names it.
	res = sgctl(t, t.Context(), env, nil, "undrain", "demo", "--wait", "--timeout", "20s")
	if res.code != exitOK || !strings.Contains(res.stderr, "demo/demo-1 is running, not draining") || !strings.Contains(res.stdout, "1/1 instances done and serving") {
		t.Fatalf("sgctl undrain: exit %d, want 0 with demo-2 back and the others named as not draining:\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	want["demo-2"] = "200 running <nil>"
	if got := ready(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the undrain: %v, want %v", got, want)
	}

	// Drained again, then restarted: the new process comes back running.
	if res := sgctl(t, t.Context(), env, nil, "drain", "demo", "--instance", "demo-2", "--wait", "--timeout", "20s"); res.code != exitOK {
		t.Fatalf("second drain: exit %d", res.code)
	}
	res = sgctl(t, t.Context(), env, nil, "restart", "demo", "--instance", "demo-2", "--wait", "--timeout", "60s")
	if res.code != exitOK {
		t.Fatalf("restart from draining: exit %d, want 0", res.code)
	}
	e, err := reg.Entry(t.Context(), "demo", "demo-2")
	if err != nil || e.Status != "running" || !e.StartedAt.After(entries["demo-2"].StartedAt) {
		t.Fatalf("after the restart: %+v %v, want running in a new process image", e, err)
	}
	entries["demo-2"] = e
	eventually(t, 10*time.Second, func() bool { return readyz(t, e) == http.StatusOK }, func() string { return "demo-2 never ready after its restart" })
}
