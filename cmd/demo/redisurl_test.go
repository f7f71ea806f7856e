package main

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// The demo counts its ticks through the instance's client
// (Instance.Redis), the one Main builds from REDIS_URL, for each of the
// three forms: it counts on the Redis the URL names, where the instance
// registers.
func TestDemoCountsItsTicksOnTheRedisOfEachURLForm(t *testing.T) {
	if testing.Short() {
		t.Skip("runs cmd/demo processes against real redis-servers")
	}
	for _, tc := range []struct {
		form  string
		start func(t *testing.T) (url string, rdb redis.UniversalClient)
	}{
		{"server", func(t *testing.T) (string, redis.UniversalClient) {
			s := redistest.Server(t)
			return s.URL(), s.Client(t)
		}},
		{"cluster", func(t *testing.T) (string, redis.UniversalClient) {
			c := redistest.Cluster(t)
			return c.URL(), c.Client(t)
		}},
		{"sentinel", func(t *testing.T) (string, redis.UniversalClient) {
			s := redistest.Sentinel(t)
			return s.URL(), s.Master().Client(t)
		}},
	} {
		t.Run(tc.form, func(t *testing.T) {
			url, rdb := tc.start(t)
			p := startDemo(t, "REDIS_URL="+url, "SG_SERVICE_NAME=demo", "SG_INSTANCE_ID=demo-1", "SG_HEALTH_HOST=127.0.0.1")
			runningEntry(t, p, registry.New(rdb), "demo-1")
			deadline := time.Now().Add(10 * time.Second)
			for {
				n, err := rdb.Get(t.Context(), "demo:{demo}:ticks").Int64()
				if err == nil && n >= 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the demo counted %d ticks (%v) on %s, want 2 within 10s", n, err, url)
				}
				time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
			}
			if out := p.Output(); strings.Contains(out, "tick not counted") {
				t.Errorf("the demo failed to count a tick:\n%s", out)
			}
		})
	}
}
