package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// tickKey is the counter the demo's own client increments every second
// while it runs (cmd/demo's service).
const tickKey = "demo:{demo}:ticks"

// sentinelTTL is the registry TTL of the Sentinel test: a heartbeat every
// second.
const sentinelTTL = 3 * time.Second

// A demo process and sgctl given the Sentinel form of REDIS_URL: the demo
// registers on the master; after kill -9 of the master it keeps running, its
// entry is on the promoted replica within one heartbeat of the promotion, its
// own client (the ticks it counts) follows, and sgctl ps and pull work
// through the same URL before and after.
func TestDemoAndSgctlThroughASentinelURLOutliveAKillOfTheMaster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmd/demo processes against a Sentinel")
	}
	set := redistest.Sentinel(t)
	url := set.URL()
	p := startDemo(t, "demo-1", url, "SG_SERVICE_TTL="+sentinelTTL.String())
	ctx := t.Context()

	master := set.Master()
	onMaster := master.Client(t)
	reg := registry.New(onMaster)
	eventually(t, 30*time.Second, func() bool {
		e, err := reg.Entry(ctx, "demo", "demo-1")
		return err == nil && e.Status == "running"
	}, func() string { return "demo-1 never ran on the master " + master.Addr() })
	env := map[string]string{"REDIS_URL": url, "SG_CONTROL_KEY": testKey}
	listed := regexp.MustCompile(`(?m)^demo\s+demo-1\s+running\s`)
	if ps := sgctl(t, ctx, env, nil, "ps", "demo"); ps.code != exitOK || !listed.MatchString(ps.stdout) {
		t.Fatalf("sgctl ps through %s: exit %d, want 0 listing demo-1 running", url, ps.code)
	}
	// The demo's own client counts its ticks on the master too.
	eventually(t, 10*time.Second, func() bool {
		n, err := onMaster.Get(ctx, tickKey).Int64()
		return err == nil && n > 0
	}, func() string { return "the demo counted no tick on the master" })

	// Everything written so far reaches the replica, as it does within
	// milliseconds in steady state.
	if err := onMaster.Do(ctx, "WAIT", 1, 5000).Err(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	master.Kill()
	promoted, at := set.WaitFailover(master)

	// Every write before the kill left the entry expiring by kill+TTL: an
	// expiry past it is a write that reached the promoted replica.
	onPromoted := promoted.Client(t)
	var back time.Time
	eventually(t, 30*time.Second, func() bool {
		ms, err := onPromoted.Do(ctx, "PEXPIRETIME", registry.EntryKey("demo", "demo-1")).Int64()
		if err == nil && ms > killed.Add(sentinelTTL).UnixMilli() {
			back = time.Now()
			return true
		}
		return false
	}, func() string { return "the entry never written on the promoted replica " + promoted.Addr() })
	bound := sentinelTTL/3 + 2*time.Second
	t.Logf("kill -9 to promotion %v; to the entry on the new master %v (%v after the promotion)",
		at.Sub(killed).Round(time.Millisecond), back.Sub(killed).Round(time.Millisecond), back.Sub(at).Round(time.Millisecond))
	if back.Sub(at) > bound {
		t.Errorf("the entry came back %v after the promotion, want within %v (one heartbeat + 2s)", back.Sub(at), bound)
	}
	select {
	case <-p.Done():
		t.Fatal("the demo exited after the failover")
	default:
	}

	// The demo's own client follows the failover: its count goes on there.
	n0, _ := onPromoted.Get(ctx, tickKey).Int64()
	eventually(t, 10*time.Second, func() bool {
		n, err := onPromoted.Get(ctx, tickKey).Int64()
		return err == nil && n > n0
	}, func() string { return "the demo counted no tick on the promoted replica" })

	// sgctl through the same URL finds the new master.
	if ps := sgctl(t, ctx, env, nil, "ps", "demo"); ps.code != exitOK || !listed.MatchString(ps.stdout) {
		t.Fatalf("sgctl ps after the failover: exit %d, want 0 listing demo-1 running", ps.code)
	}
	res := sgctl(t, ctx, env, nil, "pull", "demo", "--instance", "demo-1", "--wait", "--timeout", "20s")
	if res.code != exitOK || !strings.Contains(res.stdout, "demo-1  done") {
		t.Fatalf("sgctl pull after the failover: exit %d, want 0 with demo-1 done", res.code)
	}
}
