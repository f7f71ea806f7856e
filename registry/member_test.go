package registry_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// newMember returns a member of r closed by t.Cleanup.
func newMember(t *testing.T, r *registry.Registry, e registry.Entry) *registry.Member {
	t.Helper()
	m, err := r.Member(e)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	return m
}

func transition(from, to string) *registry.Event {
	return &registry.Event{Event: "to_" + to, From: from, To: to}
}

func TestFirstUpdateCreatesTheEntrySoABootStuckMidwayIsVisible(t *testing.T) {
	mr := miniredis.RunT(t)
	r := registry.New(newClient(t, mr.Addr()))
	m := newMember(t, r, entry("api", "i1", "init"))
	m.Update(entry("api", "i1", "configuring"), transition("connecting", "configuring"))
	ctx := context.Background()
	eventually(t, 5*time.Second, nil, func() bool {
		e, err := r.Entry(ctx, "api", "i1")
		return err == nil && e.Status == "configuring"
	}, "entry with status configuring after the first Update")
	got, err := r.Instances(ctx, "api")
	if err != nil || len(got) != 1 {
		t.Fatalf("Instances = %v, %v; want the booting instance", got, err)
	}
	if mr.Exists(registry.ServicesKey) {
		t.Errorf("the services set was written before Register (phase 8)")
	}
}

func TestHeartbeatRestoresEntryAfterFlushAll(t *testing.T) {
	mr := miniredis.RunT(t)
	clk := clockwork.NewFakeClock()
	r := registry.New(newClient(t, mr.Addr()), registry.WithClock(clk))
	m := newMember(t, r, entry("api", "i1", "registering"))
	ctx := context.Background()
	if err := m.Register(ctx, entry("api", "i1", "registering")); err != nil {
		t.Fatal(err)
	}
	m.Update(entry("api", "i1", "running"), transition("serving_health", "running"))
	m.StartHeartbeat()
	eventually(t, 5*time.Second, nil, func() bool { return !m.Stats().EntryPending }, "running written")

	mr.FlushAll()
	eventually(t, 5*time.Second, func() { clk.Advance(r.HeartbeatInterval()) }, func() bool {
		e, err := r.Entry(ctx, "api", "i1")
		return err == nil && e.Status == "running" && mr.Exists(registry.ServicesKey)
	}, "heartbeat re-registered the latest entry and the service after FLUSHALL")
	got, err := r.Instances(ctx, "api")
	if err != nil || len(got) != 1 {
		t.Fatalf("Instances after re-registration = %v, %v", got, err)
	}
}

func TestHeartbeatRestoresEntryAfterRealRedisRestart(t *testing.T) {
	srv := redistest.Server(t)
	clk := clockwork.NewFakeClock()
	r := registry.New(srv.Client(t), registry.WithClock(clk))
	m := newMember(t, r, entry("api", "i1", "running"))
	ctx := context.Background()
	if err := m.Register(ctx, entry("api", "i1", "running")); err != nil {
		t.Fatal(err)
	}
	m.StartHeartbeat()

	srv.Kill()
	srv.Restart() // empty: persistence is off
	if _, err := r.Entry(ctx, "api", "i1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("entry survived the restart (%v): the test proves nothing", err)
	}
	eventually(t, 10*time.Second, func() { clk.Advance(r.HeartbeatInterval()) }, func() bool {
		e, err := r.Entry(ctx, "api", "i1")
		return err == nil && e.Status == "running"
	}, "entry back after redis-server restart")
	if svcs, err := r.Services(ctx); err != nil || len(svcs) != 1 {
		t.Fatalf("Services after restart = %v, %v; want [api]", svcs, err)
	}
}

func TestEntryExpiresWhenHeartbeatStops(t *testing.T) {
	mr := miniredis.RunT(t)
	clk := clockwork.NewFakeClock()
	r := registry.New(newClient(t, mr.Addr()), registry.WithClock(clk), registry.WithTTL(30*time.Second))
	m := newMember(t, r, entry("api", "i1", "running"))
	ctx := context.Background()
	if err := m.Register(ctx, entry("api", "i1", "running")); err != nil {
		t.Fatal(err)
	}
	key := registry.EntryKey("api", "i1")
	m.StartHeartbeat()
	// While the heartbeat runs, the entry outlives several TTLs.
	for range 4 {
		mr.FastForward(r.HeartbeatInterval())
		clk.Advance(r.HeartbeatInterval())
		eventually(t, 5*time.Second, nil, func() bool { return mr.TTL(key) == r.TTL() }, "heartbeat refreshed the TTL")
	}
	m.StopHeartbeat()
	mr.FastForward(r.TTL())
	clk.Advance(r.TTL())
	if mr.Exists(key) {
		t.Fatal("entry outlived its TTL after the heartbeat stopped")
	}
	if got, err := r.Instances(ctx, "api"); err != nil || len(got) != 0 {
		t.Fatalf("Instances = %v, %v; want none", got, err)
	}
}

func TestUpdateNeverBlocksWhileRedisIsDown(t *testing.T) {
	for _, tc := range []struct {
		name string
		addr func(t *testing.T) string
	}{
		{"refusing connections", func(t *testing.T) string {
			mr := miniredis.RunT(t)
			addr := mr.Addr()
			mr.Close()
			return addr
		}},
		{"accepting but never answering", func(t *testing.T) string { return redistest.Silent(t).Addr() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := redis.NewClient(&redis.Options{Addr: tc.addr(t), MaxRetries: -1,
				DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
			t.Cleanup(func() { _ = c.Close() })
			const queue, updates = 64, 20000
			r := registry.New(c, registry.WithQueueSize(queue), registry.WithRetryBackoff(time.Millisecond, 10*time.Millisecond))
			m, err := r.Member(entry("api", "i1", "init"))
			if err != nil {
				t.Fatal(err)
			}
			var slowest time.Duration
			start := time.Now()
			for i := range updates {
				t0 := time.Now()
				m.Update(entry("api", "i1", fmt.Sprint("s", i)), transition("a", "b"))
				slowest = max(slowest, time.Since(t0))
			}
			total := time.Since(start)
			t.Logf("%d updates in %v (%v each), slowest %v", updates, total, total/updates, slowest)
			// Bounds far above an Update's cost (about a microsecond) and far
			// below a Redis timeout (200ms), so a blocking Update fails.
			if slowest > 100*time.Millisecond || total > 2*time.Second {
				t.Fatalf("Update blocked: slowest %v, total %v", slowest, total)
			}
			st := m.Stats()
			if st.QueuedEvents != queue || st.DroppedEvents != updates-queue || !st.EntryPending {
				t.Fatalf("Stats = %+v; want %d queued, %d dropped, entry pending", st, queue, updates-queue)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			t0 := time.Now()
			err = m.Close(ctx)
			if !errors.Is(err, registry.ErrUndelivered) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Close = %v; want ErrUndelivered and DeadlineExceeded", err)
			}
			if d := time.Since(t0); d > 2*time.Second {
				t.Fatalf("Close took %v", d)
			}
			m.Update(entry("api", "i1", "late"), transition("a", "b"))
			if st := m.Stats(); st.DroppedEvents != updates-queue+1 {
				t.Fatalf("Update after Close: dropped = %d, want %d", st.DroppedEvents, updates-queue+1)
			}
		})
	}
}

func TestUpdatesAreDeliveredOnceRedisIsBack(t *testing.T) {
	srv := redistest.Server(t)
	clk := clockwork.NewFakeClock()
	// One attempt per write: the writer's backoff, not the client's, retries.
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = c.Close() })
	r := registry.New(c, registry.WithClock(clk), registry.WithRetryBackoff(10*time.Millisecond, 100*time.Millisecond))
	m := newMember(t, r, entry("api", "i1", "init"))
	ctx := context.Background()

	srv.Kill()
	states := []string{"connecting", "configuring", "instrumenting", "loading_modules", "building_adapters", "starting"}
	prev := "init"
	for _, s := range states {
		m.Update(entry("api", "i1", s), transition(prev, s))
		prev = s
	}
	eventually(t, 10*time.Second, func() { clk.Advance(100 * time.Millisecond) },
		func() bool { return m.Stats().Failures > 0 }, "the writer tried and failed while Redis was down")
	srv.Restart()
	eventually(t, 10*time.Second, func() { clk.Advance(100 * time.Millisecond) }, func() bool {
		st := m.Stats()
		return !st.EntryPending && st.QueuedEvents == 0
	}, "everything delivered after the restart")
	e, err := r.Entry(ctx, "api", "i1")
	if err != nil || e.Status != "starting" {
		t.Fatalf("Entry = %+v, %v; want the latest status, starting", e, err)
	}
	evs, _, err := r.Events(ctx, "0", 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		got = append(got, ev.To)
	}
	if fmt.Sprint(got) != fmt.Sprint(states) {
		t.Fatalf("events after restart = %v, want %v in order", got, states)
	}
	if st := m.Stats(); st.LastError != nil || st.DeliveredEvents != uint64(len(states)) {
		t.Fatalf("Stats = %+v", st)
	}
}

func TestLatestStatusWins(t *testing.T) {
	mr := miniredis.RunT(t)
	c := newClient(t, mr.Addr())
	key := registry.EntryKey("api", "i1")
	rec := &recorder{holdCmd: "script", holdKey: key, held: make(chan struct{}, 1), release: make(chan struct{})}
	c.AddHook(rec)
	r := registry.New(c)
	m := newMember(t, r, entry("api", "i1", "init"))
	t.Cleanup(rec.open) // runs before the member's Close

	m.Update(entry("api", "i1", "s0"), transition("init", "s0"))
	<-rec.held // the writer is in flight with s0
	const n = 100
	for i := 1; i <= n; i++ {
		m.Update(entry("api", "i1", fmt.Sprint("s", i)), transition(fmt.Sprint("s", i-1), fmt.Sprint("s", i)))
	}
	rec.open()
	eventually(t, 5*time.Second, nil, func() bool {
		st := m.Stats()
		return !st.EntryPending && st.QueuedEvents == 0
	}, "all delivered")

	e, err := r.Entry(context.Background(), "api", "i1")
	if err != nil || e.Status != fmt.Sprint("s", n) {
		t.Fatalf("Entry status = %q (%v), want s%d", e.Status, err, n)
	}
	sets := 0
	for _, name := range rec.commands() {
		if name == "eval" || name == "evalsha" { // the entry script: the only one before Register
			sets++
		}
	}
	if sets > 3 {
		t.Errorf("%d entry writes for %d updates: updates made while a write is in flight must coalesce", sets, n+1)
	}
	evs, _, err := r.Events(context.Background(), "0", 1000, 0)
	if err != nil || len(evs) != n+1 {
		t.Fatalf("%d events (%v), want every transition: %d", len(evs), err, n+1)
	}
	for i, ev := range evs {
		if ev.To != fmt.Sprint("s", i) {
			t.Fatalf("event %d goes to %q, want s%d: events out of order", i, ev.To, i)
		}
	}
}

func TestNoUpdateRecreatesEntryAfterDeregister(t *testing.T) {
	mr := miniredis.RunT(t)
	c := newClient(t, mr.Addr())
	key := registry.EntryKey("api", "i1")
	rec := &recorder{held: make(chan struct{}, 1), release: make(chan struct{})}
	c.AddHook(rec)
	clk := clockwork.NewFakeClock()
	r := registry.New(c, registry.WithClock(clk))
	m := newMember(t, r, entry("api", "i1", "running"))
	t.Cleanup(rec.open) // runs before the member's Close
	ctx := context.Background()
	if err := m.Register(ctx, entry("api", "i1", "running")); err != nil {
		t.Fatal(err)
	}
	m.StartHeartbeat()

	// An asynchronous write of the entry is in flight when Deregister starts.
	rec.mu.Lock()
	rec.holdCmd, rec.holdKey = "script", key
	rec.mu.Unlock()
	m.Update(entry("api", "i1", "stopping_health"), transition("stopping_daemons", "stopping_health"))
	<-rec.held
	deregistered := make(chan error, 1)
	go func() { deregistered <- m.Deregister(ctx) }()
	select {
	case err := <-deregistered:
		t.Fatalf("Deregister returned (%v) while an entry write was in flight", err)
	case <-time.After(200 * time.Millisecond): // a bound for what must not happen
	}
	rec.open()
	if err := <-deregistered; err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	if mr.Exists(key) {
		t.Fatal("the in-flight write recreated the entry after Deregister")
	}

	// Later updates and heartbeats write events, never the entry.
	m.Update(entry("api", "i1", "deregistering"), transition("stopping_health", "deregistering"))
	m.Update(entry("api", "i1", "stopped"), transition("cleaning_up", "stopped"))
	m.StartHeartbeat()
	eventually(t, 5*time.Second, func() { clk.Advance(r.HeartbeatInterval()) },
		func() bool { return m.Stats().QueuedEvents == 0 }, "events delivered after Deregister")
	if mr.Exists(key) {
		t.Fatal("an Update after Deregister recreated the entry")
	}
	evs, _, err := r.Events(ctx, "0", 100, 0)
	if err != nil || len(evs) != 3 || evs[2].To != "stopped" {
		t.Fatalf("events = %+v, %v; want the 3 transitions, last to stopped", evs, err)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := m.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestCloseDeliversQueuedEventsBeforeReturning(t *testing.T) {
	mr := miniredis.RunT(t)
	r := registry.New(newClient(t, mr.Addr()))
	m, err := r.Member(entry("api", "i1", "init"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		m.Update(entry("api", "i1", fmt.Sprint("s", i)), transition("a", "b"))
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n, _ := newClient(t, mr.Addr()).XLen(context.Background(), registry.EventsKey).Result(); n != 1000 {
		t.Fatalf("stream has %d events after Close, want 1000", n)
	}
}

// A degraded boot registers with RegisterAsync: the entry it writes must be
// the member's own, or the next status write (a compare-and-set on the
// owner token) would take the member for an impostor and stop writing.
func TestRegisterAsyncWritesTheMembersOwnerSoLaterWritesGoOn(t *testing.T) {
	mr := miniredis.RunT(t)
	r := registry.New(newClient(t, mr.Addr()))
	m := newMember(t, r, entry("api", "i1", "init"))
	ctx := context.Background()
	m.RegisterAsync(entry("api", "i1", "registering"))
	eventually(t, 5*time.Second, nil, func() bool {
		e, err := r.Entry(ctx, "api", "i1")
		return err == nil && e.Status == "registering"
	}, "the entry RegisterAsync recorded, written by the writer")
	if e, _ := r.Entry(ctx, "api", "i1"); e.Owner != m.Owner() {
		t.Fatalf("entry owner %q, want the member's %q", e.Owner, m.Owner())
	}
	m.Update(entry("api", "i1", "running"), transition("registering", "running"))
	eventually(t, 5*time.Second, nil, func() bool {
		e, err := r.Entry(ctx, "api", "i1")
		return err == nil && e.Status == "running"
	}, "the status update after RegisterAsync written")
	if err := m.Conflict(); err != nil {
		t.Errorf("Conflict() = %v after the member's own RegisterAsync", err)
	}
}
