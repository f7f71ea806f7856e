package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

var benchSrv *redistest.Srv // shared by the benchmarks, started by TestMain when -bench is set

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(proctest.Main(benchMain{m}))
}

// benchMain starts one real Redis for all benchmarks, so Member.Update and a
// PING round trip are measured against the same server in the same run.
type benchMain struct{ m *testing.M }

func (b benchMain) Run() int {
	flag.Parse() // testing parses flags in m.Run; -test.bench is needed before
	if f := testingFlag("test.bench"); f != "" {
		if s, err := redistest.Start(); err == nil {
			benchSrv = s
			defer s.Kill()
		}
	}
	return b.m.Run()
}

func entry(service, instance, status string) registry.Entry {
	return registry.Entry{
		Service: service, Instance: instance, Status: status, Phase: "9",
		Host: "host-1", PID: 4242, Version: "v1.2.3",
		StartedAt:  time.Date(2025, 1, 2, 3, 4, 5, 6, time.FixedZone("CET", 3600)),
		UpdatedAt:  time.Date(2025, 1, 2, 3, 4, 6, 0, time.UTC),
		HealthAddr: "127.0.0.1:9090",
	}
}

func TestRegisterListDeregisterRoundTrip(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			c := b.client(t)
			r := registry.New(c)
			want := []registry.Entry{entry("api", "i1", "running"), entry("api", "i2", "starting"), entry("worker", "w1", "running")}
			for _, e := range want {
				if err := r.Register(ctx, e); err != nil {
					t.Fatalf("Register(%s/%s): %v", e.Service, e.Instance, err)
				}
			}
			svcs, err := r.Services(ctx)
			if err != nil || !slices.Equal(svcs, []string{"api", "worker"}) {
				t.Fatalf("Services = %v, %v; want [api worker]", svcs, err)
			}
			got, err := r.Instances(ctx, "api")
			if err != nil {
				t.Fatalf("Instances(api): %v", err)
			}
			if len(got) != 2 || got[0].Instance != "i1" || got[1].Instance != "i2" {
				t.Fatalf("Instances(api) = %+v, want i1 and i2", got)
			}
			if !got[0].StartedAt.Equal(want[0].StartedAt) || got[0].StartedAt.Location() != time.UTC {
				t.Errorf("StartedAt = %v, want %v in UTC", got[0].StartedAt, want[0].StartedAt)
			}
			got[0].StartedAt = want[0].StartedAt
			if got[0] != want[0] {
				t.Errorf("Instances(api)[0] = %+v, want %+v", got[0], want[0])
			}
			e, err := r.Entry(ctx, "worker", "w1")
			if err != nil || e.Status != "running" {
				t.Fatalf("Entry(worker, w1) = %+v, %v", e, err)
			}

			if err := r.Deregister(ctx, "api", "i1"); err != nil {
				t.Fatalf("Deregister: %v", err)
			}
			got, err = r.Instances(ctx, "api")
			if err != nil || len(got) != 1 || got[0].Instance != "i2" {
				t.Fatalf("Instances(api) after Deregister(i1) = %+v, %v; want only i2", got, err)
			}
			if _, err := r.Entry(ctx, "api", "i1"); !errors.Is(err, registry.ErrNotFound) {
				t.Fatalf("Entry(api, i1) after Deregister: err = %v, want ErrNotFound", err)
			}
			if n, err := c.ZCard(ctx, registry.IndexKey("api")).Result(); err != nil || n != 1 {
				t.Fatalf("index of api has %d members (%v), want 1", n, err)
			}

			// A Member's pipelines span three slots (entry+index, services,
			// events); they must work on a cluster too.
			m, err := r.Member(entry("api", "i3", "init"))
			if err != nil {
				t.Fatal(err)
			}
			m.Update(entry("api", "i3", "configuring"), &registry.Event{Event: "ping_ok", From: "connecting", To: "configuring"})
			if err := m.Register(ctx, entry("api", "i3", "registering")); err != nil {
				t.Fatalf("Member.Register: %v", err)
			}
			if err := m.Close(ctx); err != nil {
				t.Fatalf("Member.Close: %v", err)
			}
			if found, err := r.Heartbeat(ctx, "api", "i3"); err != nil || !found {
				t.Fatalf("Heartbeat(api, i3) = %v, %v; want found", found, err)
			}
			got, err = r.Instances(ctx, "api")
			if err != nil || len(got) != 2 || got[1].Instance != "i3" || got[1].Status != "registering" {
				t.Fatalf("Instances(api) after Member.Register(i3) = %+v, %v", got, err)
			}
			if evs, _, err := r.Events(ctx, "0", 10, 0); err != nil || len(evs) != 1 || evs[0].Instance != "i3" {
				t.Fatalf("Events = %+v, %v; want the member's one event", evs, err)
			}

			if b.cluster {
				cc := c.(*redis.ClusterClient)
				slotOf := func(k string) int64 {
					s, err := cc.ClusterKeySlot(ctx, k).Result()
					if err != nil {
						t.Fatal(err)
					}
					return s
				}
				s := slotOf(registry.IndexKey("api"))
				for _, k := range []string{registry.EntryKey("api", "i1"), registry.EntryKey("api", "zz:9")} {
					if slotOf(k) != s {
						t.Errorf("%s is in slot %d, index in %d: one service's keys must share a slot", k, slotOf(k), s)
					}
				}
				if slotOf(registry.ServicesKey) == s && slotOf(registry.EventsKey) == s {
					t.Logf("note: services set and events stream happen to share api's slot")
				}
			}
		})
	}
}

func TestEntryIsStoredAsJSONWithDesignFieldNamesInUTC(t *testing.T) {
	mr := miniredis.RunT(t)
	r := registry.New(newClient(t, mr.Addr()), registry.WithTTL(7*time.Second))
	if err := r.Register(context.Background(), entry("api", "i1", "running")); err != nil {
		t.Fatal(err)
	}
	key := "sg:registry:service:{api}:i1"
	if registry.EntryKey("api", "i1") != key || registry.IndexKey("api") != "sg:registry:index:{api}" {
		t.Fatalf("key builders changed: %s, %s", registry.EntryKey("api", "i1"), registry.IndexKey("api"))
	}
	raw, err := mr.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"service", "instance", "status", "phase", "host", "pid", "version", "started_at", "updated_at", "degraded", "health_addr", "owner", "control"} {
		if _, ok := m[f]; !ok {
			t.Errorf("JSON lacks %q: %s", f, raw)
		}
	}
	if len(m) != 13 {
		t.Errorf("JSON has %d fields, want these 13 of DESIGN.md: %s", len(m), raw)
	}
	if got := m["started_at"]; got != "2025-01-02T02:04:05.000000006Z" {
		t.Errorf("started_at = %v, want RFC 3339 nanoseconds in UTC", got)
	}
	if ttl := mr.TTL(key); ttl != 7*time.Second {
		t.Errorf("TTL = %v, want 7s", ttl)
	}
	if !mr.Exists(registry.ServicesKey) {
		t.Errorf("%s not written", registry.ServicesKey)
	}
}

func TestNamesThatWouldBreakTheHashTagAreRejected(t *testing.T) {
	r := registry.New(newClient(t, "127.0.0.1:1"))
	for _, e := range []registry.Entry{{Service: "a{b", Instance: "i"}, {Service: "a}", Instance: "i"}, {Service: "", Instance: "i"}, {Service: "a", Instance: ""}, {Service: "a", Instance: "x\ny"}} {
		err := r.Register(context.Background(), e)
		if !errors.Is(err, registry.ErrInvalidName) {
			t.Errorf("Register(%q, %q) = %v, want ErrInvalidName", e.Service, e.Instance, err)
		}
		if _, err := r.Member(e); !errors.Is(err, registry.ErrInvalidName) {
			t.Errorf("Member(%q, %q) = %v, want ErrInvalidName", e.Service, e.Instance, err)
		}
	}
}

func TestInstancesReadsTheIndexAndNeverScans(t *testing.T) {
	mr := miniredis.RunT(t)
	c := newClient(t, mr.Addr())
	rec := &recorder{forbidden: map[string]bool{"scan": true, "keys": true}}
	c.AddHook(rec)
	clk := clockwork.NewFakeClock()
	r := registry.New(c, registry.WithClock(clk), registry.WithTTL(30*time.Second))
	ctx := context.Background()
	for i := range 5 {
		if err := r.Register(ctx, entry("api", fmt.Sprintf("i%d", i), "running")); err != nil {
			t.Fatal(err)
		}
	}
	// i3's key vanished (evicted) while its index member lives on.
	mr.Del(registry.EntryKey("api", "i3"))

	got, err := r.Instances(ctx, "api")
	if err != nil {
		t.Fatalf("Instances: %v", err)
	}
	var ids []string
	for _, e := range got {
		ids = append(ids, e.Instance)
	}
	if !slices.Equal(ids, []string{"i0", "i1", "i2", "i4"}) {
		t.Fatalf("Instances = %v, want i0 i1 i2 i4 (i3's entry vanished)", ids)
	}
	for _, name := range rec.commands() {
		if name == "scan" || name == "keys" {
			t.Fatalf("Instances sent %s", name)
		}
	}
	if _, _, err := c.Scan(ctx, 0, "*", 10).Result(); err == nil {
		t.Fatal("the SCAN guard does not work")
	}

	// Past the TTL on the registry's clock, index members are expired: the
	// listing skips them and writes nothing (the sg-reader role is
	// read-only); the next entry write trims them.
	clk.Advance(31 * time.Second)
	before := len(rec.commands())
	got, err = r.Instances(ctx, "api")
	if err != nil || len(got) != 0 {
		t.Fatalf("Instances after TTL = %+v, %v; want none", got, err)
	}
	if sent := rec.commands()[before:]; !slices.Equal(sent, []string{"zrangebyscore"}) {
		t.Fatalf("Instances sent %v, want only zrangebyscore (a read)", sent)
	}
	if n, _ := c.ZCard(ctx, registry.IndexKey("api")).Result(); n != 5 {
		t.Fatalf("index has %d members after a listing, want the 5 expired ones left to the writers", n)
	}
	if err := r.Register(ctx, entry("api", "i5", "running")); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.ZCard(ctx, registry.IndexKey("api")).Result(); n != 1 {
		t.Fatalf("index has %d members after an entry write, want the expired ones trimmed", n)
	}
}

func TestUnknownServiceHasNoInstances(t *testing.T) {
	mr := miniredis.RunT(t)
	r := registry.New(newClient(t, mr.Addr()))
	got, err := r.Instances(context.Background(), "nope")
	if err != nil || len(got) != 0 {
		t.Fatalf("Instances(nope) = %v, %v", got, err)
	}
}

func TestHeartbeatReportsVanishedEntryAndNeverRecreatesIt(t *testing.T) {
	mr := miniredis.RunT(t)
	r := registry.New(newClient(t, mr.Addr()))
	ctx := context.Background()
	if err := r.Register(ctx, entry("api", "i1", "running")); err != nil {
		t.Fatal(err)
	}
	mr.FastForward(20 * time.Second)
	found, err := r.Heartbeat(ctx, "api", "i1")
	if err != nil || !found {
		t.Fatalf("Heartbeat = %v, %v; want found", found, err)
	}
	if ttl := mr.TTL(registry.EntryKey("api", "i1")); ttl != 30*time.Second {
		t.Fatalf("TTL after heartbeat = %v, want 30s", ttl)
	}
	mr.Del(registry.EntryKey("api", "i1"))
	found, err = r.Heartbeat(ctx, "api", "i1")
	if err != nil || found {
		t.Fatalf("Heartbeat of a vanished entry = %v, %v; want not found", found, err)
	}
	if mr.Exists(registry.EntryKey("api", "i1")) {
		t.Fatal("Heartbeat recreated the entry")
	}
	if ok, _ := mr.SortedSet(registry.IndexKey("api")); len(ok) != 0 {
		t.Fatalf("index still lists the vanished instance: %v", ok)
	}
}

func TestHeartbeatIntervalIsAThirdOfTTLButAtLeastOneSecond(t *testing.T) {
	for ttl, want := range map[time.Duration]time.Duration{30 * time.Second: 10 * time.Second, 2 * time.Second: time.Second, 0: 10 * time.Second} {
		r := registry.New(nil, registry.WithTTL(ttl))
		if got := r.HeartbeatInterval(); got != want {
			t.Errorf("TTL %v: HeartbeatInterval = %v, want %v", ttl, got, want)
		}
	}
}
