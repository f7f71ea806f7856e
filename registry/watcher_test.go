package registry_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// eventDeadline bounds "within one event's delivery": far below the TTLs
// these tests use when they show that an event, not a resync, did it.
const eventDeadline = 5 * time.Second

// watch starts a watcher of svc on reg, waits for its first resync, and
// closes it at cleanup.
func watch(t *testing.T, reg *registry.Registry, svc string, opts ...registry.WatchOption) *registry.Watcher {
	t.Helper()
	w, err := reg.Watch(svc, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := w.WaitSynced(ctx); err != nil {
		t.Fatalf("first resync: %v", err)
	}
	return w
}

// ids returns the instance ids of ins.
func ids(ins []registry.Instance) []string {
	out := make([]string, len(ins))
	for i, in := range ins {
		out[i] = in.Instance
	}
	return out
}

// waitRunning polls the watcher until its running ids are want, and returns
// how long that took.
func waitRunning(t *testing.T, w *registry.Watcher, timeout time.Duration, want ...string) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, timeout, nil, func() bool { return slices.Equal(ids(w.Running()), want) },
		"the watcher's running instances become "+join(want))
	return time.Since(start)
}

func join(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	out := s[0]
	for _, x := range s[1:] {
		out += ", " + x
	}
	return out
}

// member returns a Member of svc/id advertising addr, closed at cleanup;
// nothing is written before its first Register or Update.
func member(t *testing.T, reg *registry.Registry, svc, id, addr string) *registry.Member {
	t.Helper()
	m, err := reg.Member(registry.Entry{Service: svc, Instance: id, Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = m.Close(ctx)
	})
	return m
}

// runningMember returns a Member of svc/id advertising addr that, as the
// lifecycle does, registered (in registering), started its heartbeat and
// moved to running; closed at cleanup.
func runningMember(t *testing.T, reg *registry.Registry, svc, id, addr string) *registry.Member {
	t.Helper()
	m := member(t, reg, svc, id, addr)
	if err := m.Register(t.Context(), registry.Entry{Status: "registering"}); err != nil {
		t.Fatal(err)
	}
	m.StartHeartbeat()
	move(m, svc, id, addr, "serving_health", "running")
	return m
}

// move moves m from one state to another as the lifecycle does: the
// entry and the event, delivered by the member's writer.
func move(m *registry.Member, svc, id, addr, from, to string) {
	m.Update(registry.Entry{Service: svc, Instance: id, Status: to, Addr: addr},
		&registry.Event{Event: "test", From: from, To: to})
}

func TestWatcherFollowsInstancesIntoAndOutOfRunningWithinOneEvent(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			if b.name != "miniredis" && testing.Short() {
				t.Skip("real redis-server")
			}
			// A TTL of an hour: no resync happens during the test, so every
			// change below is an event's doing.
			reg := registry.New(b.client(t), registry.WithTTL(time.Hour))
			w := watch(t, reg, "api")
			other := watch(t, reg, "web")
			m := member(t, reg, "api", "api-1", "127.0.0.1:8001")
			if err := m.Register(t.Context(), registry.Entry{Status: "registering", Addr: "127.0.0.1:8001"}); err != nil {
				t.Fatal(err)
			}

			v := w.View()
			move(m, "api", "api-1", "127.0.0.1:8001", "serving_health", "running")
			took := waitRunning(t, w, eventDeadline, "api-1")
			t.Logf("running -> in the view after %v", took)
			select {
			case <-v.Changed():
			default:
				t.Error("the view that lacked api-1 was not marked changed")
			}
			if got := w.Running()[0]; got.Addr != "127.0.0.1:8001" || !got.Expires.After(time.Now()) {
				t.Errorf("instance %+v, want its advertised addr and a future expiry", got)
			}
			if n := len(other.Running()); n != 0 {
				t.Errorf("the watcher of another service shows %d instances", n)
			}

			for _, leave := range []string{"pulling", "draining", "stopping_daemons"} {
				move(m, "api", "api-1", "127.0.0.1:8001", "running", leave)
				took = waitRunning(t, w, eventDeadline)
				t.Logf("running -> %s: out of the view after %v", leave, took)
				if leave != "stopping_daemons" {
					move(m, "api", "api-1", "127.0.0.1:8001", leave, "running")
					waitRunning(t, w, eventDeadline, "api-1")
				}
			}
			if !w.View().Connected {
				t.Error("view not connected")
			}
		})
	}
}

func TestWatcherResyncRepairsMissedEventsWithinOneTTL(t *testing.T) {
	if testing.Short() {
		t.Skip("real redis-server, seconds of TTL")
	}
	const ttl = 3 * time.Second
	rdb := redistest.Server(t).Client(t)
	reg := registry.New(rdb, registry.WithTTL(ttl))
	w := watch(t, reg, "api")

	// Register writes the entry without an event: only a resync can show it.
	a := member(t, reg, "api", "api-a", "127.0.0.1:8001")
	if err := a.Register(t.Context(), registry.Entry{Status: "running", Addr: "127.0.0.1:8001"}); err != nil {
		t.Fatal(err)
	}
	a.StartHeartbeat()
	took := waitRunning(t, w, ttl+time.Second, "api-a")
	t.Logf("a running instance whose event was missed: in the view after %v (TTL %v)", took, ttl)
	if took > ttl+500*time.Millisecond {
		t.Errorf("repaired after %v, want within one TTL (%v)", took, ttl)
	}

	// Leaving running without an event: out at the next resync.
	if err := a.Register(t.Context(), registry.Entry{Status: "draining", Addr: "127.0.0.1:8001"}); err != nil {
		t.Fatal(err)
	}
	took = waitRunning(t, w, ttl+time.Second)
	t.Logf("an instance that left running, event missed: out of the view after %v", took)
	if took > ttl+500*time.Millisecond {
		t.Errorf("repaired after %v, want within one TTL (%v)", took, ttl)
	}
}

func TestWatcherDropsAnInstanceThatStopsHeartbeatingAtItsEntrysExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("real redis-server, seconds of TTL")
	}
	const ttl = 3 * time.Second
	rdb := redistest.Server(t).Client(t)
	reg := registry.New(rdb, registry.WithTTL(ttl))
	w := watch(t, reg, "api")
	m := runningMember(t, reg, "api", "api-a", "127.0.0.1:8001")
	waitRunning(t, w, eventDeadline, "api-a")

	// Let a resync or two pass with the heartbeat on: the instance stays.
	time.Sleep(ttl + ttl/2) // the scenario's duration, not a synchronisation
	if got := ids(w.Running()); !slices.Equal(got, []string{"api-a"}) {
		t.Fatalf("a heartbeating instance left the view: %v", got)
	}

	// The process dies: no more heartbeats, no event. The instance stays in
	// the view until its entry expires (a TTL after its last heartbeat at
	// most), and never after.
	m.StopHeartbeat()
	stopped := time.Now()
	lastExpiry := w.Running()[0].Expires
	deadline := stopped.Add(ttl + time.Second)
	for {
		before := time.Now()
		ins := w.Running()
		if len(ins) == 0 {
			break
		}
		for _, in := range ins {
			if !in.Expires.After(before) {
				t.Fatalf("Running returned %s after its entry expired (%v)", in.Instance, in.Expires)
			}
			lastExpiry = in.Expires
		}
		if time.Now().After(deadline) {
			t.Fatalf("still in the view %v after its last heartbeat", time.Since(stopped))
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
	gone := time.Now()
	t.Logf("out of the view %v after its heartbeat stopped, %v after its entry's expiry (TTL %v)",
		gone.Sub(stopped), gone.Sub(lastExpiry), ttl)
	if gone.Sub(stopped) > ttl+100*time.Millisecond {
		t.Errorf("out of the view %v after its last heartbeat, want within one TTL", gone.Sub(stopped))
	}
	if gone.Before(lastExpiry) {
		t.Errorf("left the view %v before its entry expired", lastExpiry.Sub(gone))
	}
	// The goroutine publishes the pruned view, not only the read path.
	eventually(t, time.Second, nil, func() bool { return len(w.View().Running) == 0 }, "the view drops it")
}

func TestWatcherRunningLeavesOutExpiredInstancesWithoutItsGoroutine(t *testing.T) {
	mr := miniredis.RunT(t)
	clk := clockwork.NewFakeClockAt(time.Now())
	reg := registry.New(newClient(t, mr.Addr()), registry.WithTTL(10*time.Second), registry.WithClock(clk))
	if err := reg.Register(t.Context(), registry.Entry{Service: "api", Instance: "api-a", Status: "running"}); err != nil {
		t.Fatal(err)
	}
	w := watch(t, reg, "api")
	if got := ids(w.Running()); !slices.Equal(got, []string{"api-a"}) {
		t.Fatalf("running %v, want api-a", got)
	}
	// The fake clock passes the expiry; the goroutine may not have run yet.
	clk.Advance(10 * time.Second)
	if got := w.Running(); len(got) != 0 {
		t.Fatalf("Running returned %v past its expiry", ids(got))
	}
}

func TestWatcherSurvivesFlushall(t *testing.T) {
	if testing.Short() {
		t.Skip("real redis-server, seconds of TTL")
	}
	const ttl = 3 * time.Second
	rdb := redistest.Server(t).Client(t)
	reg := registry.New(rdb, registry.WithTTL(ttl))
	w := watch(t, reg, "api")
	runningMember(t, reg, "api", "api-alive", "127.0.0.1:8001")
	dead := member(t, reg, "api", "api-dead", "127.0.0.1:8002")
	if err := dead.Register(t.Context(), registry.Entry{Status: "registering"}); err != nil {
		t.Fatal(err)
	}
	// dead never heartbeats: flushed, it stays gone.
	move(dead, "api", "api-dead", "127.0.0.1:8002", "serving_health", "running")
	waitRunning(t, w, eventDeadline, "api-alive", "api-dead")

	if err := rdb.FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	flushed := time.Now()
	took := waitRerunning(t, w, flushed, ttl)
	t.Logf("after FLUSHALL: the view is the re-registered instance alone after %v (TTL %v)", took, ttl)
	if took > ttl+500*time.Millisecond {
		t.Errorf("repaired after %v, want within one TTL", took)
	}

	// The events stream was flushed too: the reader goes on with the new one.
	late := member(t, reg, "api", "api-late", "127.0.0.1:8003")
	move(late, "api", "api-late", "127.0.0.1:8003", "serving_health", "running")
	start := time.Now()
	waitRunning(t, w, eventDeadline, "api-alive", "api-late")
	t.Logf("an instance running after the flush: in the view after %v (%v after the flush)", time.Since(start), time.Since(flushed))
}

func TestWatcherSurvivesARedisServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("real redis-server, seconds of TTL")
	}
	const ttl = 3 * time.Second
	srv := redistest.Server(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, DialerRetries: 1, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	reg := registry.New(rdb, registry.WithTTL(ttl), registry.WithRetryBackoff(50*time.Millisecond, 200*time.Millisecond))
	w := watch(t, reg, "api")
	views := collectViews(t, w)

	runningMember(t, reg, "api", "api-alive", "127.0.0.1:8001")
	waitRunning(t, w, eventDeadline, "api-alive")

	srv.Restart() // persistence is off: the new server starts empty
	restarted := time.Now()
	eventually(t, 10*time.Second, nil, func() bool { return views.sawDisconnected() }, "a view that is not connected")
	eventually(t, 10*time.Second, nil, func() bool { return w.View().Connected }, "connected again")
	took := waitRerunning(t, w, restarted, ttl)
	t.Logf("after a redis-server restart: connected again, the re-registered instance in the view after %v (TTL %v)", took, ttl)
	if took > ttl+500*time.Millisecond {
		t.Errorf("repaired after %v, want within one TTL", took)
	}

	late := member(t, reg, "api", "api-late", "127.0.0.1:8003")
	move(late, "api", "api-late", "127.0.0.1:8003", "serving_health", "running")
	waitRunning(t, w, eventDeadline, "api-alive", "api-late")
}

// waitRerunning polls until the view is api-alive alone, as its heartbeat
// wrote it again after the fault at since (its expiry tells), and returns how
// long after the fault that was.
func waitRerunning(t *testing.T, w *registry.Watcher, since time.Time, ttl time.Duration) time.Duration {
	t.Helper()
	eventually(t, ttl+time.Second, nil, func() bool {
		ins := w.Running()
		return len(ins) == 1 && ins[0].Instance == "api-alive" && ins[0].Expires.After(since.Add(ttl))
	}, "the view is api-alive alone, re-registered")
	return time.Since(since)
}

// viewLog records every view a watcher publishes that Next returns.
type viewLog struct {
	mu           sync.Mutex
	disconnected bool
}

func (l *viewLog) sawDisconnected() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.disconnected
}

// collectViews follows w with Next until it closes; the goroutine ends with
// the watcher (t.Cleanup closes it first) or the test's context.
func collectViews(t *testing.T, w *registry.Watcher) *viewLog {
	l := &viewLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		v := w.View()
		for {
			var err error
			if v, err = w.Next(context.Background(), v); err != nil {
				return
			}
			if !v.Connected {
				l.mu.Lock()
				l.disconnected = true
				l.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { _ = w.Close(); <-done })
	return l
}

func TestWatcherCloseEndsABlockedReadAtOnceAndWakesWaiters(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	reg := registry.New(rdb, registry.WithTTL(time.Hour))
	w, err := reg.Watch("api", registry.WithWatchBlock(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WaitSynced(t.Context()); err != nil {
		t.Fatal(err)
	}
	next := make(chan error, 1)
	go func() {
		_, err := w.Next(context.Background(), w.View())
		next <- err
	}()
	start := time.Now()
	// Let the watcher block in XREAD: it does right after its resync.
	eventually(t, 5*time.Second, nil, func() bool { return blockedClients(t, rdb) > 0 }, "a blocked XREAD")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("Close with an XREAD blocked for up to an hour: %v", took)
	if took > 2*time.Second {
		t.Errorf("Close took %v, want at once", took)
	}
	if err := <-next; !errors.Is(err, registry.ErrWatcherClosed) {
		t.Errorf("Next after Close: %v, want ErrWatcherClosed", err)
	}
	if err := w.WaitSynced(t.Context()); err != nil {
		t.Errorf("WaitSynced after a sync and Close: %v, want nil", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// blockedClients is the number of clients blocked in a command on rdb's server.
func blockedClients(t *testing.T, rdb *redis.Client) int {
	info, err := rdb.Info(t.Context(), "clients").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "blocked_clients:"); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

func TestWatchRefusesABadServiceName(t *testing.T) {
	reg := registry.New(newClient(t, miniredis.RunT(t).Addr()))
	if _, err := reg.Watch("a{b}"); !errors.Is(err, registry.ErrInvalidName) {
		t.Fatalf("Watch(a{b}): %v, want ErrInvalidName", err)
	}
}

func TestWatcherWithAFrozenRedisGoesStaleDropsAtExpiryAndClosesWithinTheWriteTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("real redis-server, seconds of TTL")
	}
	const (
		ttl   = 3 * time.Second
		write = 500 * time.Millisecond
		block = time.Second
	)
	srv := redistest.Server(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, DialerRetries: 1, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	reg := registry.New(rdb, registry.WithTTL(ttl), registry.WithWriteTimeout(write))
	w := watch(t, reg, "api", registry.WithWatchBlock(block))
	runningMember(t, reg, "api", "api-a", "127.0.0.1:8001")
	waitRunning(t, w, eventDeadline, "api-a")

	srv.Freeze()
	t.Cleanup(srv.Thaw)
	frozen := time.Now()
	expiry := w.Running()[0].Expires
	eventually(t, block+write+time.Second, nil, func() bool { return !w.View().Connected }, "the view not connected")
	t.Logf("frozen Redis: the view not connected after %v (block %v + write timeout %v)", time.Since(frozen), block, write)
	if got := ids(w.Running()); !slices.Equal(got, []string{"api-a"}) && time.Now().Before(expiry) {
		t.Errorf("running %v before the known expiry, want api-a kept", got)
	}
	eventually(t, time.Until(expiry)+time.Second, nil, func() bool { return len(w.View().Running) == 0 }, "the view drops api-a at its known expiry")
	t.Logf("api-a out of the view %v after its known expiry", time.Since(expiry))

	start := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("Close with Redis frozen: %v", took)
	if took > write+500*time.Millisecond {
		t.Errorf("Close took %v with Redis frozen, want within the write timeout (%v)", took, write)
	}
}
