package fleettest

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
	"github.com/stargazer/lifecycle/service"
)

// failoverTTL is the registry TTL of the failover tests: a heartbeat every
// second, as in the report that found the cluster case.
const failoverTTL = 3 * time.Second

// failoverRig is a Redis deployment whose master can be killed: a Sentinel
// set or a cluster with replicas.
type failoverRig interface {
	// client is what an instance (and, separately, an operator) connects
	// with: the client Main and sgctl build from the deployment's REDIS_URL.
	client(tb testing.TB) redis.UniversalClient
	// master returns the node serving key now.
	master(tb testing.TB, key string) *redistest.Srv
	// promoted waits for a replica to take key over from old.
	promoted(tb testing.TB, key string, old *redistest.Srv) (*redistest.Srv, time.Time)
}

// urlClient returns the client fleetenv.NewRedisClient builds from raw, as
// Main and sgctl do from REDIS_URL, closed by the test's cleanup.
func urlClient(tb testing.TB, raw string) redis.UniversalClient {
	tb.Helper()
	c, err := fleetenv.NewRedisClient(raw)
	if err != nil {
		tb.Fatalf("REDIS_URL=%s: %v", raw, err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

type sentinelRig struct{ set *redistest.SentinelSet }

func (r sentinelRig) client(tb testing.TB) redis.UniversalClient    { return urlClient(tb, r.set.URL()) }
func (r sentinelRig) master(tb testing.TB, _ string) *redistest.Srv { return r.set.Master() }
func (r sentinelRig) promoted(_ testing.TB, _ string, old *redistest.Srv) (*redistest.Srv, time.Time) {
	return r.set.WaitFailover(old)
}

type clusterRig struct{ c *redistest.ClusterSrv }

func (r clusterRig) client(tb testing.TB) redis.UniversalClient      { return urlClient(tb, r.c.URL()) }
func (r clusterRig) master(tb testing.TB, key string) *redistest.Srv { return r.c.MasterOf(tb, key) }
func (r clusterRig) promoted(tb testing.TB, key string, old *redistest.Srv) (*redistest.Srv, time.Time) {
	return r.c.WaitPromoted(tb, key, old)
}

// failoverTimes is what one failover measured.
type failoverTimes struct {
	promotion   time.Duration // kill -9 of the master to the replica seen as master
	reregistery time.Duration // kill to the instance's entry written on the new master
	pull        time.Duration // a pull op sent once the entry is back, to its done result
	shutdown    time.Duration // the instance's Shutdown afterwards
}

// failover boots an instance through rig, kills the master serving its
// service's slot with SIGKILL, and checks what an operator relies on: the
// instance stays running and live, its entry is written on the promoted
// replica, a pull op is done afterwards (the control-ops daemon reads again),
// and its status updates and events reach the new master.
func failover(tb testing.TB, rig failoverRig, svcName string) failoverTimes {
	tb.Helper()
	ctx := context.Background()
	const id = "i-1"
	key := registry.EntryKey(svcName, id)
	n := startInstance(tb, rig.client(tb), svcName, id, service.WithServiceTTL(failoverTTL))
	reg := registry.New(rig.client(tb))
	poll(tb, 10*time.Second, "the instance registered", func() bool {
		es, err := reg.Instances(ctx, svcName)
		return err == nil && len(es) == 1 && es[0].Status == "running"
	})

	old := rig.master(tb, key)
	// What the instance wrote reaches the replica before the kill, as it does
	// within milliseconds in steady state.
	if err := old.Client(tb).Do(ctx, "WAIT", 1, 5000).Err(); err != nil {
		tb.Fatal(err)
	}
	killed := time.Now()
	old.Kill()
	promoted, at := rig.promoted(tb, key, old)

	// Every write before the kill left the entry expiring by kill+TTL: an
	// expiry past it on the new master is a heartbeat or re-registration that
	// reached it.
	direct := promoted.Client(tb)
	var back time.Time
	poll(tb, 30*time.Second, "the entry written on the promoted replica", func() bool {
		ms, err := direct.Do(ctx, "PEXPIRETIME", key).Int64()
		if err == nil && ms > killed.Add(failoverTTL).UnixMilli() {
			back = time.Now()
			return true
		}
		return false
	})
	if !n.running() {
		tb.Fatalf("instance in %s after the failover, want running", n.in.State())
	}
	resp, err := http.Get("http://" + n.in.HealthAddr() + "/livez")
	if err != nil {
		tb.Fatalf("/livez after the failover: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("/livez after the failover = %d, want 200", resp.StatusCode)
	}

	// The control-ops daemon reads the promoted replica: a pull is done. The
	// operator connects afterwards, as sgctl does on each run.
	operator := rig.client(tb)
	reg = registry.New(operator)
	c := controlops.NewClient(operator, controlKey)
	sent := time.Now()
	// A cluster node may still name the dead master for a moment after the
	// promotion: a failed send reloads the client's map, and the operator
	// sends again, as one would run sgctl again.
	var op controlops.Op
	poll(tb, 5*time.Second, "a pull sent after the failover", func() bool {
		op, err = c.Send(ctx, svcName, controlops.OpPull, id, nil)
		if err != nil {
			tb.Logf("sending a pull after the failover: %v", err)
			time.Sleep(slotmapRetry)
		}
		return err == nil
	})
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := c.Wait(wctx, svcName, op, []string{id}, nil)
	if err != nil || res[id].Status != controlops.StatusDone {
		tb.Fatalf("pull after the failover: %+v, %v", res, err)
	}
	pulled := time.Since(sent)

	// The pull's transitions (running -> pulling -> running) reached the new
	// master: the entry and the events stream.
	poll(tb, 10*time.Second, "the pull's status updates written on the promoted replica", func() bool {
		e, err := reg.Entry(ctx, svcName, id)
		return err == nil && e.Status == "running" && e.UpdatedAt.After(killed)
	})
	// The member writes an entry before its events (on a cluster the two may
	// live on different nodes): the events come a round trip after the
	// entry, so they are waited for too, not read once.
	var evs []registry.Event
	poll(tb, 10*time.Second, "the pull's events in "+registry.EventsKey, func() bool {
		evs, _, err = reg.Events(ctx, "0", 1000, 0)
		return err == nil && slices.ContainsFunc(evs, func(e registry.Event) bool {
			return e.Instance == id && e.To == "pulling" && e.Time.After(killed)
		})
	})
	f := failoverTimes{
		promotion:   at.Sub(killed),
		reregistery: back.Sub(killed),
		pull:        pulled,
		shutdown:    n.shutdown(tb),
	}
	if f.reregistery-f.promotion > failoverBound {
		tb.Logf("the entry came back %v after the promotion; the instance logged:\n%s", f.reregistery-f.promotion, n.logs.String())
	}
	return f
}

// slotmapRetry is how long an operator waits before sending again after a
// failed send: go-redis reloads the map in the background meanwhile.
const slotmapRetry = 500 * time.Millisecond

// failoverBound is how soon after the promotion the entry must be back: one
// heartbeat and two seconds.
const failoverBound = failoverTTL/3 + 2*time.Second

func (f failoverTimes) String() string {
	return fmt.Sprintf("kill -9 to promotion %v, to the entry on the new master %v (%v after the promotion); a pull after it done in %v; shutdown %v",
		f.promotion.Round(time.Millisecond), f.reregistery.Round(time.Millisecond),
		(f.reregistery - f.promotion).Round(time.Millisecond), f.pull.Round(time.Millisecond), f.shutdown.Round(time.Millisecond))
}

// check asserts the failover's bounds: the entry back within one heartbeat of
// the promotion plus two seconds, and a shutdown that waits on nothing.
func (f failoverTimes) check(tb testing.TB) {
	tb.Helper()
	if f.reregistery-f.promotion > failoverBound {
		tb.Errorf("the entry came back %v after the promotion, want within %v (one heartbeat + 2s)", f.reregistery-f.promotion, failoverBound)
	}
	if f.shutdown > 5*time.Second {
		tb.Errorf("shutdown after the failover took %v", f.shutdown)
	}
}

// Behind a Sentinel, kill -9 of the master: the instance stays running and
// live, its entry is on the promoted replica within one heartbeat of the
// promotion, and its status updates and control ops go on there.
func TestSentinelFailoverKeepsTheInstanceRegisteredAndControllable(t *testing.T) {
	f := failover(t, sentinelRig{redistest.Sentinel(t)}, "sen")
	t.Logf("Sentinel: %v", f)
	f.check(t)
}

// On Redis Cluster, kill -9 of the master serving the service's slot: the
// registry and the control-ops daemon reload the slot map on their first
// failures, so the instance is back on the promoted replica within one
// heartbeat of the promotion instead of a minute later.
func TestClusterFailoverKeepsTheInstanceRegisteredAndControllable(t *testing.T) {
	f := failover(t, clusterRig{redistest.ClusterWithReplicas(t)}, "clu")
	t.Logf("Cluster: %v", f)
	f.check(t)
}

// BenchmarkFailover measures kill -9 of the master to the instance's entry
// written on the promoted replica, behind a Sentinel and on Redis Cluster,
// with the registry TTL at 3s (a heartbeat every second). Each iteration
// starts a new deployment (outside the figures). Reported in ms: promotion
// (kill to the replica seen as master), reregistered (kill to the entry on the
// new master), after-promotion (their difference), pull (a pull op sent then,
// to its done result).
//
//	go test -run '^$' -bench Failover -benchtime 3x ./internal/fleettest
func BenchmarkFailover(b *testing.B) {
	for _, kind := range []string{"sentinel", "cluster"} {
		b.Run(kind, func(b *testing.B) {
			var all []failoverTimes
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				var rig failoverRig
				if kind == "cluster" {
					rig = clusterRig{redistest.ClusterWithReplicas(b)}
				} else {
					rig = sentinelRig{redistest.Sentinel(b)}
				}
				b.StartTimer()
				f := failover(b, rig, fmt.Sprintf("bench%d", i))
				b.Logf("%s: %v", kind, f)
				all = append(all, f)
			}
			median := func(get func(failoverTimes) time.Duration) float64 {
				ds := make([]time.Duration, len(all))
				for i, f := range all {
					ds[i] = get(f)
				}
				slices.Sort(ds)
				return float64(ds[len(ds)/2].Microseconds()) / 1000
			}
			b.ReportMetric(median(func(f failoverTimes) time.Duration { return f.promotion }), "promotion-ms")
			b.ReportMetric(median(func(f failoverTimes) time.Duration { return f.reregistery }), "reregistered-ms")
			b.ReportMetric(median(func(f failoverTimes) time.Duration { return f.reregistery - f.promotion }), "after-promotion-ms")
			b.ReportMetric(median(func(f failoverTimes) time.Duration { return f.pull }), "pull-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
