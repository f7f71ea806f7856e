package main

// The fault suite, process side: what a real demo process does, exit code
// included, when the redis-server the test started is frozen (SIGSTOP) or
// when a boot phase hangs. Times are measured with the real clock against
// the bounds of docs/faults.md.
//
//	go test -run 'TestDemo.*(Frozen|Hung)' -v ./cmd/demo

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// exitWithin waits for the process to exit and returns its code and how long
// it took from since; it fails the test after limit plus a margin for a
// process that never exits.
func exitWithin(t *testing.T, p *proctest.Proc, since time.Time, limit time.Duration) (int, time.Duration) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(limit + 10*time.Second):
		t.Fatalf("demo did not exit within %v", limit+10*time.Second)
	}
	took := time.Since(since)
	return p.Wait(t), took
}

func entryOf(c *redis.Client, service, instance string) (registry.Entry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return registry.New(c).Entry(ctx, service, instance)
}

func testClient(t *testing.T, s *redistest.Srv) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), ContextTimeoutEnabled: true, DialerRetries: 1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestDemoRedisFrozenBeforeBootRequiredExitsOneWithinTwoRedisTimeouts(t *testing.T) {
	srv := redistest.Server(t)
	srv.Freeze()
	const timeout = time.Second
	proctest.Build(t, demoPkg) // built before the clock starts
	start := time.Now()
	p := startDemo(t, "REDIS_URL="+srv.URL(), "SG_REDIS_TIMEOUT=1s")
	limit := 2*timeout + time.Second
	code, took := exitWithin(t, p, start, limit)
	t.Logf("Redis frozen before boot, required: exit %d after %v (bound %v)", code, took, limit)
	if code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if took > limit {
		t.Fatalf("exited after %v, want within %v", took, limit)
	}
	out := p.Output()
	if !strings.Contains(out, "hard-fail gate") || !strings.Contains(out, "redis at "+srv.Addr()+" did not answer within 1s") {
		t.Errorf("the log does not say Redis at %s did not answer", srv.Addr())
	}
}

func TestDemoRedisFrozenMidBootRequiredExitsOneNamingRedis(t *testing.T) {
	srv := redistest.Server(t)
	const timeout, delay = time.Second, 500 * time.Millisecond
	p := startDemo(t, "REDIS_URL="+srv.URL(), "SG_REDIS_TIMEOUT=1s", "DEMO_PHASE_DELAY=configuring=500ms")
	p.WaitFor(t, "redis connection verified")
	srv.Freeze() // after the ping gate, while the service configures itself
	start := time.Now()
	// The rest of configuring, the registration's deadline, the
	// deregistration's, and the unwind.
	limit := delay + 2*timeout + time.Second
	code, took := exitWithin(t, p, start, limit)
	t.Logf("Redis frozen after the ping gate, required: exit %d %v after the freeze (bound %v)", code, took, limit)
	if code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if took > limit {
		t.Fatalf("exited %v after the freeze, want within %v", took, limit)
	}
	if out := p.Output(); !strings.Contains(out, "phase registering: registry: redis at "+srv.Addr()+" did not answer within 1s") {
		t.Errorf("the failure does not name the phase, Redis and its address")
	}
}

func TestDemoRedisFrozenWhileRunningSIGTERMExitsZeroAndTheEntryExpiresByTTL(t *testing.T) {
	srv := redistest.Server(t)
	reader := testClient(t, srv)
	// The defaults, but for a short TTL (heartbeat every 2s) so that the
	// entry's expiry shows quickly, and an OnStop that takes 300ms.
	const timeout, hooks, ttl = 2 * time.Second, 300 * time.Millisecond, 6 * time.Second
	p := startDemo(t, "REDIS_URL="+srv.URL(), "SG_SERVICE_TTL=6s", "SG_INSTANCE_ID=frozen-1", "DEMO_PHASE_DELAY=cleaning_up=300ms")
	p.WaitFor(t, "boot completed")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if e, err := entryOf(reader, "demo", "frozen-1"); err == nil && e.Status == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("entry never reached running")
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}

	srv.Freeze()
	start := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	limit := 2*timeout + hooks
	code, took := exitWithin(t, p, start, limit)
	t.Logf("Redis frozen while running, SIGTERM: exit %d after %v (bound 2 x SG_REDIS_TIMEOUT + hooks = %v)", code, took, limit)
	if code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if took > limit {
		t.Fatalf("exited %v after SIGTERM, want within %v", took, limit)
	}
	if out := p.Output(); !strings.Contains(out, "the entry expires by its TTL") {
		t.Errorf("the log does not say the entry is left to its TTL")
	}

	srv.Thaw()
	thawed := time.Now()
	deadline = thawed.Add(ttl + 2*time.Second)
	for {
		_, err := entryOf(reader, "demo", "frozen-1")
		if errors.Is(err, registry.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("entry still there %v after the thaw (TTL %v): %v", time.Since(thawed), ttl, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, bounded by the deadline
	}
	t.Logf("entry gone %v after the thaw (TTL %v)", time.Since(thawed), ttl)
}

func TestDemoHungPhaseFailsTheBootAtTheBootTimeoutPlusTheGrace(t *testing.T) {
	const bootTimeout, grace = time.Second, time.Second // grace: lifecycle.PhaseGrace
	proctest.Build(t, demoPkg)                          // built before the clock starts
	start := time.Now()
	p := startDemo(t, "DEMO_HANG_PHASE=starting", "SG_BOOT_TIMEOUT=1s")
	limit := bootTimeout + grace + time.Second
	code, took := exitWithin(t, p, start, limit)
	t.Logf("phase starting hung: exit %d after %v (boot timeout %v + grace %v)", code, took, bootTimeout, grace)
	if code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if took < bootTimeout+grace || took > limit {
		t.Fatalf("exited after %v, want at the boot timeout plus the grace (%v), within %v", took, bootTimeout+grace, limit)
	}
	out := p.Output()
	for _, want := range []string{"boot timeout of 1s reached in phase starting", "abandoned", "to=failed event=cleaned_up"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q", want)
		}
	}
}
