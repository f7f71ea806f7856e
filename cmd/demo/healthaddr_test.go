package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/internal/redistest"
)

// /healthz showed the internal Redis address while Redis was down
// ("dial tcp 10.0.0.5:6379: connect: connection refused"). By default it
// hides it; SG_HEALTH_SHOW_ADDRS=true shows it.
func TestHealthzShowsTheRedisAddressOnlyWithSGHealthShowAddrs(t *testing.T) {
	srv := redistest.Server(t)
	addr := srv.Addr()
	srv.Kill() // a real redis-server that answered, now down: its port refuses
	for _, show := range []string{"", "true", "false"} {
		env := []string{"REDIS_URL=redis://" + addr + "/0", "SG_REDIS_REQUIRED=false", "SG_SERVICE_NAME=demo", "SG_HEALTH_HOST=127.0.0.1"}
		if show != "" {
			env = append(env, "SG_HEALTH_SHOW_ADDRS="+show)
		}
		p := startDemo(t, env...)
		haddr := healthAddr(t, p)
		var out string
		deadline := time.Now().Add(10 * time.Second)
		for {
			if cr := healthz(t, haddr).Checks[health.RedisCheck]; len(cr) == 1 && strings.Contains(cr[0].Output, "connection refused") {
				out = cr[0].Output
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("SG_HEALTH_SHOW_ADDRS=%q: no failing %s check within 10s", show, health.RedisCheck)
			}
			time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
		}
		if got, want := strings.Contains(out, addr), show == "true"; got != want {
			t.Errorf("SG_HEALTH_SHOW_ADDRS=%q: %s output %q shows %s: %v, want %v", show, health.RedisCheck, out, addr, got, want)
		}
		if show != "true" && !strings.Contains(out, health.AddrHidden) {
			t.Errorf("SG_HEALTH_SHOW_ADDRS=%q: %q does not say an address was hidden", show, out)
		}
		_ = p.Signal(syscall.SIGTERM)
		if code := p.Wait(t); code != 0 {
			t.Errorf("exit %d after SIGTERM, want 0", code)
		}
	}
	p := startDemo(t, "SG_HEALTH_SHOW_ADDRS=maybe")
	if code := p.Wait(t); code != 2 || !strings.Contains(p.Output(), `SG_HEALTH_SHOW_ADDRS=\"maybe\"`) {
		t.Errorf("SG_HEALTH_SHOW_ADDRS=maybe: exit %d, want 2 naming the variable and its value:\n%s", code, p.Output())
	}
}
