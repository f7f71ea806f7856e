package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/registry"
)

// logBuffer is a slog text sink safe for the member's goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the lines that contain every one of subs.
func (l *logBuffer) lines(subs ...string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// process is one process's view of one instance: its own registry handle
// (logger, clock) and Member, as two processes with one instance id have.
type process struct {
	r    *registry.Registry
	m    *registry.Member
	logs *logBuffer
}

func newProcess(t *testing.T, c redis.UniversalClient, host string, pid int, opts ...registry.Option) *process {
	t.Helper()
	p := &process{logs: &logBuffer{}}
	p.r = registry.New(c, append([]registry.Option{registry.WithLogger(p.logs.logger())}, opts...)...)
	e := entry("api", "i1", "running")
	e.Host, e.PID = host, pid
	p.m = newMember(t, p.r, e)
	return p
}

func (p *process) entry(status string) registry.Entry {
	e := entry("api", "i1", status)
	e.Host, e.PID = "", 0 // the member's initial entry has them; keep them
	return e
}

func register(t *testing.T, p *process, host string, pid int) {
	t.Helper()
	e := entry("api", "i1", "running")
	e.Host, e.PID = host, pid
	if err := p.m.Register(context.Background(), e); err != nil {
		t.Fatal(err)
	}
}

// Two processes started with one instance id: the report's case. The second
// takes the entry over; the first finds the other owner at its next write,
// says so once naming both processes, and from then on never writes or
// deletes the entry, whichever of them stops first.
func TestOneProcessNeverRemovesAnothersEntry(t *testing.T) {
	for _, b := range backends {
		for _, firstStops := range []bool{true, false} {
			name := b.name + "/second stops first"
			if firstStops {
				name = b.name + "/first stops first"
			}
			t.Run(name, func(t *testing.T) {
				c := b.client(t)
				ctx := context.Background()
				key := registry.EntryKey("api", "i1")
				older := newProcess(t, c, "host-a", 101)
				register(t, older, "host-a", 101)
				newer := newProcess(t, c, "host-b", 202)
				register(t, newer, "host-b", 202) // registration takes the entry over
				if older.m.Owner() == newer.m.Owner() || newer.m.Owner() == "" {
					t.Fatalf("owner tokens %q and %q: want distinct random tokens", older.m.Owner(), newer.m.Owner())
				}

				// The older one's next status write is a compare-and-set: it loses.
				e := entry("api", "i1", "pulling")
				e.Host, e.PID = "host-a", 101
				older.m.Update(e, transition("running", "pulling"))
				eventually(t, 5*time.Second, nil, func() bool { return older.m.Conflict() != nil }, "the older process sees the conflict")
				var ce *registry.OwnerConflictError
				if err := older.m.Conflict(); !errors.Is(err, registry.ErrOwnerConflict) || !errors.As(err, &ce) {
					t.Fatalf("Conflict() = %v, want an *OwnerConflictError wrapping ErrOwnerConflict", err)
				}
				if ce.Host != "host-a" || ce.PID != 101 || ce.OtherHost != "host-b" || ce.OtherPID != 202 || ce.Key != key {
					t.Errorf("conflict = %+v, want this process host-a/101 and the owner host-b/202", ce)
				}
				if got := older.logs.lines("level=WARN", "another process took", "host=host-a", "pid=101", "owner_host=host-b", "owner_pid=202"); len(got) != 1 {
					t.Errorf("%d warn lines naming both processes, want 1:\n%s", len(got), older.logs.String())
				}
				if got := newer.logs.lines("level=WARN", "took over an entry that had not expired", "previous_host=host-a", "previous_pid=101"); len(got) != 1 {
					t.Errorf("%d warn lines from the process that took the entry over, want 1:\n%s", len(got), newer.logs.String())
				}
				if newer.m.Conflict() != nil {
					t.Errorf("the newer process reports a conflict: %v", newer.m.Conflict())
				}
				got, err := newer.r.Entry(ctx, "api", "i1")
				if err != nil || got.Owner != newer.m.Owner() || got.Status != "running" || got.PID != 202 {
					t.Fatalf("entry = %+v, %v; want the newer process's, untouched by the older's update", got, err)
				}

				// More writes by the older one: still nothing, and no second error line.
				older.m.Update(e, transition("pulling", "running"))
				if err := older.m.Register(ctx, e); err != nil {
					t.Errorf("Register after the conflict = %v, want nil (no Redis failure)", err)
				}
				if got, _ := newer.r.Entry(ctx, "api", "i1"); got.Owner != newer.m.Owner() {
					t.Fatalf("the older process overwrote the entry after the conflict: %+v", got)
				}

				if firstStops {
					if err := older.m.Deregister(ctx); err != nil {
						t.Fatal(err)
					}
					if got, err := newer.r.Instances(ctx, "api"); err != nil || len(got) != 1 || got[0].Owner != newer.m.Owner() {
						t.Fatalf("after the older process deregistered: Instances = %+v, %v; want the newer's entry", got, err)
					}
					if err := newer.m.Deregister(ctx); err != nil {
						t.Fatal(err)
					}
				} else {
					if err := newer.m.Deregister(ctx); err != nil {
						t.Fatal(err)
					}
					if err := older.m.Deregister(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := newer.r.Entry(ctx, "api", "i1"); !errors.Is(err, registry.ErrNotFound) {
					t.Errorf("entry after both deregistered: %v, want ErrNotFound (the owner deleted it)", err)
				}
				if n := len(older.logs.lines("another process took")); n != 1 {
					t.Errorf("%d conflict lines from the older process, want one:\n%s", n, older.logs.String())
				}
			})
		}
	}
}

// The restart hand-over: exec keeps the pid and the instance id; the new
// process's first write takes the old entry over, and the old process is
// gone, so nobody reports a conflict.
func TestFirstWriteTakesOverAPredecessorsEntry(t *testing.T) {
	mr := miniredis.RunT(t)
	c := newClient(t, mr.Addr())
	ctx := context.Background()
	old := newProcess(t, c, "host-a", 101)
	register(t, old, "host-a", 101) // then the process is replaced: no Deregister, no Close
	successor := newProcess(t, c, "host-a", 101)
	successor.m.Update(successor.entry("connecting"), transition("init", "connecting"))
	eventually(t, 5*time.Second, nil, func() bool {
		e, err := successor.r.Entry(ctx, "api", "i1")
		return err == nil && e.Owner == successor.m.Owner() && e.Status == "connecting"
	}, "the successor's first write took the entry over")
	eventually(t, 5*time.Second, nil, func() bool {
		return len(successor.logs.lines("level=INFO", "took the entry over", "previous_host=host-a", "previous_pid=101")) == 1
	}, "take-over logged naming the predecessor")
	if err := successor.m.Conflict(); err != nil {
		t.Errorf("successor reports %v", err)
	}
}

func TestHeartbeatFindsAnotherOwnerAndStopsWritingTheEntry(t *testing.T) {
	mr := miniredis.RunT(t)
	c := newClient(t, mr.Addr())
	clk := clockwork.NewFakeClock()
	ctx := context.Background()
	older := newProcess(t, c, "host-a", 101, registry.WithClock(clk))
	register(t, older, "host-a", 101)
	older.m.StartHeartbeat()
	newer := newProcess(t, c, "host-b", 202, registry.WithClock(clk))
	register(t, newer, "host-b", 202)
	key := registry.EntryKey("api", "i1")
	ttlBefore := mr.TTL(key)

	eventually(t, 5*time.Second, func() { clk.Advance(older.r.HeartbeatInterval()) },
		func() bool { return older.m.Conflict() != nil }, "the older process's heartbeat sees the other owner")
	if got := older.logs.lines("level=WARN", "owner_host=host-b", "owner_pid=202", "host=host-a", "pid=101"); len(got) != 1 {
		t.Errorf("conflict not logged once naming both processes:\n%s", older.logs.String())
	}
	if e, _ := newer.r.Entry(ctx, "api", "i1"); e.Owner != newer.m.Owner() {
		t.Fatalf("entry = %+v, want the newer process's", e)
	}
	if mr.TTL(key) != ttlBefore {
		t.Errorf("the older process's heartbeat refreshed the other's entry")
	}
}

// heartbeatFixture is a member with a running heartbeat on a fake clock, and
// a way to run one beat and wait until it is done.
type heartbeatFixture struct {
	mr  *miniredis.Miniredis
	clk *clockwork.FakeClock
	p   *process
}

func newHeartbeatFixture(t *testing.T) *heartbeatFixture {
	t.Helper()
	f := &heartbeatFixture{mr: miniredis.RunT(t), clk: clockwork.NewFakeClock()}
	// One dial attempt, no retries: a beat against a stopped Redis fails fast.
	c := redis.NewClient(&redis.Options{Addr: f.mr.Addr(), DialerRetries: 1, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	f.p = newProcess(t, c, "host-a", 101, registry.WithClock(f.clk))
	register(t, f.p, "host-a", 101)
	f.p.m.StartHeartbeat()
	return f
}

// beat advances the clock by one heartbeat interval and waits until the
// heartbeat is done, logging included.
func (f *heartbeatFixture) beat(t *testing.T) {
	t.Helper()
	want := f.p.m.Stats().Heartbeats + 1
	f.clk.Advance(f.p.r.HeartbeatInterval())
	eventually(t, 5*time.Second, nil, func() bool { return f.p.m.Stats().Heartbeats >= want }, "one heartbeat")
}

func TestHeartbeatFailuresAreLoggedAtWarnOnceAMinute(t *testing.T) {
	f := newHeartbeatFixture(t) // TTL 30s: a beat every 10s
	f.mr.Close()
	for range 18 { // three minutes of outage
		f.beat(t)
	}
	warns := f.p.logs.lines("level=WARN", "heartbeat failed")
	if len(warns) != 3 {
		t.Fatalf("%d warn lines in 3 minutes of failed beats (every 10s), want 3 (at 10s, 70s, 130s):\n%s", len(warns), f.p.logs.String())
	}
	if strings.Contains(warns[0], "suppressed") || !strings.Contains(warns[1], "suppressed=5") {
		t.Errorf("want the first line at once and the next counting the 5 beats left out:\n%s", strings.Join(warns, "\n"))
	}
	if !strings.Contains(warns[0], "connection refused") {
		t.Errorf("warn line does not say why: %s", warns[0])
	}
	if err := f.mr.Restart(); err != nil {
		t.Fatal(err)
	}
	f.beat(t) // miniredis restarted empty: the entry is rewritten
	if got := f.p.logs.lines("level=INFO", "heartbeat recovered", "suppressed=5"); len(got) != 1 {
		t.Errorf("recovery not logged with the count of the lines left out since the last:\n%s", f.p.logs.String())
	}
	if st := f.p.m.Stats(); st.HeartbeatFailures != 18 {
		t.Errorf("HeartbeatFailures = %d, want 18", st.HeartbeatFailures)
	}
	f.mr.Close()
	f.beat(t)
	if n := len(f.p.logs.lines("level=WARN", "heartbeat failed")); n != 4 {
		t.Errorf("the first failure after a recovery was not logged at once (%d warn lines)", n)
	}
}

func TestHeartbeatRewritesAnEntryThatIsNotJSON(t *testing.T) {
	f := newHeartbeatFixture(t)
	key := registry.EntryKey("api", "i1")
	f.mr.Set(key, "\x00garbage{")
	f.beat(t)
	raw, err := f.mr.Get(key)
	var e registry.Entry
	if err != nil || json.Unmarshal([]byte(raw), &e) != nil || e.Owner != f.p.m.Owner() || e.Status != "running" {
		t.Fatalf("entry after a beat = %q (%v), want the member's entry rewritten", raw, err)
	}
	if f.mr.TTL(key) != f.p.r.TTL() {
		t.Errorf("rewritten entry has TTL %v, want %v", f.mr.TTL(key), f.p.r.TTL())
	}
	if got := f.p.logs.lines("level=WARN", "not a JSON object", "key="+key); len(got) != 1 {
		t.Errorf("rewrite not reported naming the key:\n%s", f.p.logs.String())
	}
	if f.p.m.Conflict() != nil {
		t.Errorf("a corrupt entry was taken for another owner: %v", f.p.m.Conflict())
	}
}

// Someone made the entry key a hash, and the index key a string: the keys are
// the registry's by contract, so the heartbeat replaces them, naming each key
// and the type it found.
func TestHeartbeatReplacesKeysOfTheWrongTypeNamingThem(t *testing.T) {
	f := newHeartbeatFixture(t)
	key, idx := registry.EntryKey("api", "i1"), registry.IndexKey("api")
	f.mr.Del(key)
	f.mr.HSet(key, "status", "hijacked")
	f.beat(t)
	if got := f.p.logs.lines("level=WARN", "wrong type", "key="+key, "type=hash"); len(got) != 1 {
		t.Fatalf("wrong-type entry key not reported by name and type:\n%s", f.p.logs.String())
	}
	if e, err := f.p.r.Entry(context.Background(), "api", "i1"); err != nil || e.Owner != f.p.m.Owner() {
		t.Fatalf("Entry = %+v, %v; want the member's entry back", e, err)
	}

	f.mr.Del(idx)
	f.mr.Set(idx, "not a sorted set")
	f.beat(t)
	if got := f.p.logs.lines("level=WARN", "wrong type", "key="+idx, "type=string"); len(got) != 1 {
		t.Fatalf("wrong-type index key not reported by name and type:\n%s", f.p.logs.String())
	}
	if got, err := f.p.r.Instances(context.Background(), "api"); err != nil || len(got) != 1 {
		t.Fatalf("Instances = %+v, %v; want the instance listed again", got, err)
	}
}

func TestRegisterReplacesAServicesKeyOfTheWrongTypeNamingIt(t *testing.T) {
	mr := miniredis.RunT(t)
	logs := &logBuffer{}
	r := registry.New(newClient(t, mr.Addr()), registry.WithLogger(logs.logger()))
	mr.Set(registry.ServicesKey, "oops")
	if err := r.Register(context.Background(), entry("api", "i1", "running")); err != nil {
		t.Fatalf("Register with a string at %s: %v", registry.ServicesKey, err)
	}
	if svcs, err := r.Services(context.Background()); err != nil || len(svcs) != 1 || svcs[0] != "api" {
		t.Fatalf("Services = %v, %v; want [api]", svcs, err)
	}
	if got := logs.lines("level=WARN", "key="+registry.ServicesKey, "type=string"); len(got) != 1 {
		t.Errorf("replacement not reported:\n%s", logs.String())
	}
}

func TestInstancesSkipsAnEntryKeyOfTheWrongTypeNamingIt(t *testing.T) {
	mr := miniredis.RunT(t)
	logs := &logBuffer{}
	r := registry.New(newClient(t, mr.Addr()), registry.WithLogger(logs.logger()))
	ctx := context.Background()
	for _, id := range []string{"i1", "i2", "i3"} {
		if err := r.Register(ctx, entry("api", id, "running")); err != nil {
			t.Fatal(err)
		}
	}
	bad := registry.EntryKey("api", "i2")
	mr.Del(bad)
	mr.HSet(bad, "status", "hijacked")
	mr.Set(registry.EntryKey("api", "i3"), "not json")
	got, err := r.Instances(ctx, "api")
	if err != nil || len(got) != 1 || got[0].Instance != "i1" {
		t.Fatalf("Instances = %+v, %v; want i1 only, without an error", got, err)
	}
	if got := logs.lines("level=WARN", "wrong type", "key="+bad, "type=hash"); len(got) != 1 {
		t.Errorf("wrong-type entry not reported by name:\n%s", logs.String())
	}
	if got := logs.lines("level=WARN", "unreadable", "i3"); len(got) != 1 {
		t.Errorf("unreadable entry not reported:\n%s", logs.String())
	}
}

// A second process with the same instance id takes the entry over and goes
// away, by a stop (its entry deleted) or a crash (its entry expires): the
// first one takes the entry back at its next heartbeat, and keeps it.
func TestTheOriginalTakesItsEntryBackWithinOneHeartbeatOnceTheOtherIsGone(t *testing.T) {
	for _, gone := range []string{"deregistered", "expired"} {
		t.Run(gone, func(t *testing.T) {
			mr := miniredis.RunT(t)
			c := newClient(t, mr.Addr())
			clk := clockwork.NewFakeClock()
			ctx := context.Background()
			a := newProcess(t, c, "host-a", 101, registry.WithClock(clk))
			register(t, a, "host-a", 101)
			a.m.StartHeartbeat()
			b := newProcess(t, c, "host-b", 202, registry.WithClock(clk))
			register(t, b, "host-b", 202)
			beat := func() {
				want := a.m.Stats().Heartbeats + 1
				clk.Advance(a.r.HeartbeatInterval())
				eventually(t, 5*time.Second, nil, func() bool { return a.m.Stats().Heartbeats >= want }, "one heartbeat of a")
			}
			beat()
			if a.m.Conflict() == nil {
				t.Fatal("a's heartbeat did not see b's entry")
			}
			beat() // b still runs: a keeps off its entry
			if e, _ := a.r.Entry(ctx, "api", "i1"); e.Owner != b.m.Owner() {
				t.Fatalf("entry %+v while b runs, want b's", e)
			}
			switch gone {
			case "deregistered":
				if err := b.m.Deregister(ctx); err != nil {
					t.Fatal(err)
				}
			case "expired":
				mr.FastForward(a.r.TTL() + time.Second) // b crashed: its entry expires
			}
			beat()
			e, err := a.r.Entry(ctx, "api", "i1")
			if err != nil || e.Owner != a.m.Owner() || e.Host != "host-a" {
				t.Fatalf("entry %+v, %v one heartbeat after b's was %s: want a's", e, err, gone)
			}
			if err := a.m.Conflict(); err != nil {
				t.Errorf("a still reports a conflict: %v", err)
			}
			for range 3 { // and it stays a's
				beat()
			}
			if e, _ := a.r.Entry(ctx, "api", "i1"); e.Owner != a.m.Owner() {
				t.Errorf("entry %+v three heartbeats later, want a's", e)
			}
			if got := a.logs.lines("level=WARN", "takes the entry back", "owner_host=host-b", "owner_pid=202"); len(got) != 1 {
				t.Errorf("%d warn lines saying a takes the entry back, want 1:\n%s", len(got), a.logs.String())
			}
		})
	}
}
