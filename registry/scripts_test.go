package registry_test

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// An idle instance's only regular Redis work is its heartbeat: one script
// call that runs three commands (GET to check the owner, ZADD, PEXPIRE), as
// INFO commandstats, which counts the commands a script runs, shows.
func TestHeartbeatIsOneScriptCallOfThreeCommands(t *testing.T) {
	srv := redistest.Server(t)
	c := srv.Client(t)
	clk := clockwork.NewFakeClock()
	p := newProcess(t, c, "host-a", 101, registry.WithClock(clk))
	register(t, p, "host-a", 101)
	p.m.StartHeartbeat()
	ctx := context.Background()
	beat := func() {
		t.Helper()
		want := p.m.Stats().Heartbeats + 1
		clk.Advance(p.r.HeartbeatInterval())
		eventually(t, 5*time.Second, nil, func() bool { return p.m.Stats().Heartbeats >= want }, "one heartbeat")
	}
	beat() // loads the script into Redis's cache (EVALSHA, NOSCRIPT, EVAL)
	before, err := redistest.ReadStats(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	beat()
	after, err := redistest.ReadStats(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	got := after.Since(before)
	want := map[string]int64{"evalsha": 1, "get": 1, "zadd": 1, "pexpire": 1}
	if !maps.Equal(got.Commands, want) {
		t.Fatalf("one heartbeat ran %v, want %v", got, want)
	}
	if st := p.m.Stats(); st.HeartbeatFailures != 0 {
		t.Fatalf("heartbeat failures: %+v", st)
	}

	// The lean path still finds keys of the wrong type on a real server.
	key, idx := registry.EntryKey("api", "i1"), registry.IndexKey("api")
	c.Del(ctx, key)
	c.HSet(ctx, key, "status", "hijacked")
	beat()
	if got := p.logs.lines("level=WARN", "wrong type", "key="+key, "type=hash"); len(got) != 1 {
		t.Fatalf("wrong-type entry key not reported by name and type:\n%s", p.logs.String())
	}
	c.Del(ctx, idx)
	c.Set(ctx, idx, "not a sorted set", 0)
	beat()
	if got := p.logs.lines("level=WARN", "wrong type", "key="+idx, "type=string"); len(got) != 1 {
		t.Fatalf("wrong-type index key not reported by name and type:\n%s", p.logs.String())
	}
	if got, err := p.r.Instances(ctx, "api"); err != nil || len(got) != 1 || got[0].Owner != p.m.Owner() {
		t.Fatalf("Instances = %+v, %v; want the member's entry back", got, err)
	}
}

// Entry writes go in pipelines by the scripts' SHA1 once the process sent
// their text. A Redis that lost its
// script cache (a restart, a failover to a replica that never ran the script,
// SCRIPT FLUSH) answers NOSCRIPT: the write sends the script's text once, in a
// second round trip, without repeating the rest of the pipeline (the events),
// and the next writes go by SHA1 again.
func TestEntryWritesGoBySHA1AndResendAScriptRedisForgot(t *testing.T) {
	srv := redistest.Server(t)
	c := srv.Client(t)
	rec := &recorder{}
	c.AddHook(rec)
	r := registry.New(c)
	m := newMember(t, r, entry("api", "i1", "init"))
	ctx := context.Background()
	if err := m.Register(ctx, entry("api", "i1", "registering")); err != nil {
		t.Fatal(err)
	}
	// A process's first write of each script carries its text: a boot costs
	// no NOSCRIPT round trip on a Redis that never ran the scripts.
	if got := rec.commands(); slices.Contains(got, "evalsha") || !slices.Contains(got, "eval") {
		t.Fatalf("commands of the first write = %v, want the scripts' text (EVAL)", got)
	}
	deliver := func(from, to string) {
		t.Helper()
		m.Update(entry("api", "i1", to), transition(from, to))
		eventually(t, 5*time.Second, nil, func() bool {
			st := m.Stats()
			return !st.EntryPending && st.QueuedEvents == 0
		}, "update "+to+" delivered")
		if e, err := r.Entry(ctx, "api", "i1"); err != nil || e.Status != to {
			t.Fatalf("entry = %+v, %v; want status %s", e, err, to)
		}
	}
	deliver("registering", "serving_health")
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	before := len(rec.commands())
	deliver("serving_health", "running")
	after := rec.commands()[before:]
	if !slices.Contains(after, "evalsha") || !slices.Contains(after, "eval") {
		t.Fatalf("commands after SCRIPT FLUSH = %v, want EVALSHA answered NOSCRIPT, then EVAL", after)
	}
	before = len(rec.commands())
	deliver("running", "pulling")
	if after := rec.commands()[before:]; slices.Contains(after, "eval") || !slices.Contains(after, "evalsha") {
		t.Fatalf("commands of the next write = %v, want EVALSHA only", after)
	}
	evs, _, err := r.Events(ctx, "0", 100, 0)
	if err != nil || len(evs) != 3 {
		t.Fatalf("events = %+v, %v; want each of the 3 transitions once (the resend repeats no XADD)", evs, err)
	}
	if st := m.Stats(); st.Failures != 0 {
		t.Fatalf("a NOSCRIPT counted as a failed write: %+v", st)
	}
}
