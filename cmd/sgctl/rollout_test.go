package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/registry"
)

// holder stands in for the instances' daemons of a rolling restart: it
// reads the op stream, keeps each restart unanswered, and answers the
// oldest (accepted, a new process registered running, a signed done) only
// once as many are held as the test expects in flight at once.
type holder struct {
	c        *redis.Client
	reg      *registry.Registry
	entries  map[string]registry.Entry
	inFlight int // answer once this many are held (or no more will come)
	total    int

	mu       sync.Mutex
	ops      []controlops.Op
	held     []controlops.Op
	maxHeld  int
	answered int
}

func (h *holder) loop(ctx context.Context) {
	last := "0"
	for ctx.Err() == nil {
		streams, err := h.c.XRead(ctx, &redis.XReadArgs{Streams: []string{controlops.StreamKey("demo"), last}, Block: 50 * time.Millisecond}).Result()
		if err != nil {
			continue // redis.Nil on timeout; the closed client at the end
		}
		for _, m := range streams[0].Messages {
			last = m.ID
			o, err := controlops.Parse(m.Values)
			if err != nil {
				continue
			}
			o.StreamID = m.ID
			h.mu.Lock()
			h.ops = append(h.ops, o)
			h.held = append(h.held, o)
			h.maxHeld = max(h.maxHeld, len(h.held))
			h.mu.Unlock()
		}
		for h.answerOne(ctx) {
		}
	}
}

// answerOne answers the oldest held op when enough are held.
func (h *holder) answerOne(ctx context.Context) bool {
	h.mu.Lock()
	if len(h.held) == 0 || len(h.held) < h.inFlight && h.answered+len(h.held) < h.total {
		h.mu.Unlock()
		return false
	}
	o := h.held[0]
	h.held = h.held[1:]
	h.answered++
	h.mu.Unlock()
	e := h.entries[o.Target]
	e.PID += 1000
	e.StartedAt = time.Now()
	_ = h.reg.Register(ctx, e)
	for _, st := range []controlops.Status{controlops.StatusAccepted, controlops.StatusDone} {
		r := controlops.SignResult([]byte(testKey), "demo", controlops.Result{OpID: o.ID, Op: o.Name, Entry: o.StreamID,
			Instance: o.Target, Status: st, At: time.Now(), State: "running", PID: e.PID})
		h.c.XAdd(ctx, &redis.XAddArgs{Stream: controlops.ResultsKey("demo"), Values: map[string]any{
			"op_id": r.OpID, "op": r.Op, "entry": r.Entry, "instance": r.Instance, "status": string(r.Status),
			"at": strconv.FormatInt(r.At.UnixMilli(), 10), "state": r.State, "pid": strconv.Itoa(r.PID), "key_id": r.KeyID, "sig": r.Sig,
		}})
	}
	return true
}

// A restart of a whole service is a rollout that sgctl runs: one signed op
// per instance, addressed to it, without args, and never more than
// --max-unavailable unanswered at once (default 1; 0: all at once). The
// holder answers only when the expected number is held, so a rollout that
// sent fewer at once would stall, and one that sent more shows in maxHeld.
func TestRestartOfAServiceSendsOneSignedOpPerInstanceAtMostMaxUnavailableAtOnce(t *testing.T) {
	for _, tc := range []struct {
		flags []string
		want  int
		says  string
	}{
		{nil, 1, "at most 1 out of running at once"},
		{[]string{"--max-unavailable", "2"}, 2, "at most 2 out of running at once"},
		{[]string{"--max-unavailable", "0"}, 3, "all at once (--max-unavailable 0: no limit)"},
	} {
		t.Run(strings.Join(append([]string{"flags"}, tc.flags...), " "), func(t *testing.T) {
			mr := miniredis.RunT(t)
			c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
			h := &holder{c: c, reg: registry.New(c), entries: map[string]registry.Entry{}, inFlight: tc.want, total: 3}
			for _, e := range runningDemo(3) {
				h.entries[e.Instance] = e
				if err := h.reg.Register(t.Context(), e); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); h.loop(ctx) }()
			t.Cleanup(func() { cancel(); _ = c.Close(); <-done })

			env := map[string]string{"REDIS_URL": "redis://" + mr.Addr(), "SG_CONTROL_KEY": testKey}
			res := sgctl(t, t.Context(), env, nil, append([]string{"restart", "demo", "--timeout", "10s"}, tc.flags...)...)
			if res.code != exitOK || !strings.Contains(res.stdout, "rolling restart of demo: demo-1, demo-2, demo-3; "+tc.says) ||
				!strings.Contains(res.stdout, "restart of demo: 3/3 instances done and serving") {
				t.Fatalf("got %d %q, want exit 0, %q and 3/3 done", res.code, res.stdout, tc.says)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.maxHeld != tc.want {
				t.Errorf("%d ops unanswered at once, want %d", h.maxHeld, tc.want)
			}
			var targets []string
			trace := ""
			for _, o := range h.ops {
				targets = append(targets, o.Target)
				if err := controlops.Verify([]byte(testKey), "demo", o); err != nil {
					t.Errorf("op to %s does not verify with SG_CONTROL_KEY: %v", o.Target, err)
				}
				if o.Name != controlops.OpRestart || len(o.Args) > 0 && string(o.Args) != "null" {
					t.Errorf("sent %s with args %s, want a restart without args", o.Name, o.Args)
				}
				if !strings.Contains(res.stdout, "op "+o.ID) {
					t.Errorf("output does not name the op id %s", o.ID)
				}
				// One rollout, one trace: every op carries the same trace id.
				tid := strings.Split(o.Traceparent, "-")[1]
				if trace != "" && tid != trace {
					t.Errorf("op to %s in trace %s, the first in %s", o.Target, tid, trace)
				}
				trace = tid
			}
			if slices.Sort(targets); fmt.Sprint(targets) != "[demo-1 demo-2 demo-3]" {
				t.Errorf("ops sent to %v, want one to each instance", targets)
			}
		})
	}
}

// rollDrain is the demos' drain delay in the rolling-restart tests: each
// instance stays out of running at least this long, longer than a registry
// poll, so an overlap cannot hide between two samples.
const rollDrain = "300ms"

// forger is a Redis writer without the control key, as the security review
// of issue 19.3 was, and more: every 20 ms it deletes the service's
// rolling-restart slots key, appends an unsigned done (and one with a
// bogus signature) for every restart op in the stream, to its instance, and
// rewrites the registry entry of every instance that is out of running as
// running in a new process (host "forged", so the test's sampler can tell
// it from the instances' own writes; the owner token is kept, so the
// instances' writes still land over it). It leaves an instance's own
// running entry alone: forging it would change nothing, and would hide the
// instance's return from the sampler.
type forger struct {
	rdb      redis.UniversalClient
	deletes  int
	results  int
	registry int
}

func (f *forger) run(ctx context.Context, ids []string) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		f.once(ctx, ids)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (f *forger) once(ctx context.Context, ids []string) {
	if f.rdb.Del(ctx, controlops.SlotsKey("demo")).Err() == nil {
		f.deletes++
	}
	ops, _ := f.rdb.XRevRangeN(ctx, controlops.StreamKey("demo"), "+", "-", 8).Result()
	for _, m := range ops {
		o, err := controlops.Parse(m.Values)
		if err != nil || o.Name != controlops.OpRestart {
			continue
		}
		for _, sig := range []string{"", strings.Repeat("ab", 32)} {
			if f.rdb.XAdd(ctx, &redis.XAddArgs{Stream: controlops.ResultsKey("demo"), Values: map[string]any{
				"op_id": o.ID, "op": o.Name, "entry": m.ID, "instance": o.Target, "status": "done",
				"at": strconv.FormatInt(time.Now().UnixMilli(), 10), "state": "running", "pid": "1",
				"key_id": controlops.KeyID([]byte(testKey)), "sig": sig,
			}}).Err() == nil {
				f.results++
			}
		}
	}
	for _, id := range ids {
		// In one script: a GET then SET from here could land after the
		// instance's own running write and hide it from the sampler.
		n, err := forgeRunning.Run(ctx, f.rdb, []string{registry.EntryKey("demo", id)}, time.Now().UTC().Format(time.RFC3339Nano)).Int()
		if err == nil && n == 1 {
			f.registry++
		}
	}
}

// forgeRunning rewrites an entry that is not running (nor forged already)
// as running in a new process, host "forged", keeping its owner and TTL.
var forgeRunning = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local ok, e = pcall(cjson.decode, v)
if not ok or type(e) ~= 'table' or e['status'] == 'running' or e['host'] == 'forged' then return 0 end
e['status'] = 'running'
e['host'] = 'forged'
e['started_at'] = ARGV[1]
redis.call('SET', KEYS[1], cjson.encode(e), 'KEEPTTL')
return 1
`)

// outOfRunningTrue samples the registry as outOfRunning does, but skips the
// forger's entries: an instance's status is the last one it wrote itself.
type outOfRunningTrue struct {
	samples, max int
	at           []string
}

func (o *outOfRunningTrue) poll(ctx context.Context, reg *registry.Registry, ids []string) {
	status := map[string]string{}
	for _, id := range ids {
		status[id] = "running"
	}
	for ctx.Err() == nil {
		entries, err := reg.Instances(ctx, "demo")
		if err == nil {
			listed := map[string]bool{}
			for _, e := range entries {
				listed[e.Instance] = true
				if e.Host != "forged" {
					status[e.Instance] = e.Status
				}
			}
			var out []string
			for _, id := range ids {
				if !listed[id] {
					status[id] = "" // between its deregistration and its next boot's first write
				}
				if status[id] != "running" {
					out = append(out, id)
				}
			}
			o.samples++
			if len(out) > o.max {
				o.max, o.at = len(out), out
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Millisecond): // the sampling period, not a synchronisation
		}
	}
}

// outOfRunningByEvents replays the instances' own transitions (sg:events,
// which the forger does not write), in the order of their times (one
// machine, one clock), and returns the largest number of ids out of running
// at once and which.
//
// final is each id's state after its last transition, "/booted" added when
// it booted (a transition to registering) after since.
func outOfRunningByEvents(t *testing.T, rdb redis.UniversalClient, ids []string, since time.Time) (most int, at []string, n int, final map[string]string) {
	t.Helper()
	msgs, err := rdb.XRange(t.Context(), registry.EventsKey, strconv.FormatInt(since.UnixMilli(), 10), "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	type tr struct {
		at       time.Time
		instance string
		to       string
	}
	var trs []tr
	for _, m := range msgs {
		at, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(m.Values["time"]))
		if m.Values["service"] == "demo" && !at.Before(since) {
			trs = append(trs, tr{at, fmt.Sprint(m.Values["instance"]), fmt.Sprint(m.Values["to"])})
		}
	}
	slices.SortStableFunc(trs, func(a, b tr) int { return a.at.Compare(b.at) })
	state := map[string]string{}
	for _, id := range ids {
		state[id] = "running"
	}
	booted := map[string]bool{}
	for _, x := range trs {
		state[x.instance] = x.to
		booted[x.instance] = booted[x.instance] || x.to == "registering"
		var out []string
		for _, id := range ids {
			if state[id] != "running" {
				out = append(out, id)
			}
		}
		if len(out) > most {
			most, at = len(out), out
		}
	}
	final = map[string]string{}
	for _, id := range ids {
		final[id] = state[id]
		if booted[id] {
			final[id] += "/booted"
		}
	}
	return most, at, len(trs), final
}

// The review's reproduction of issue 19.3, with more forgery: while
// `sgctl restart demo --max-unavailable 1` runs against three demo
// processes, a Redis writer without the key deletes the slots key every
// 20 ms, forges a done for every op and a running entry for every
// instance. When the limit lived in that key, all three were in starting
// at once. Now sgctl runs the rollout and believes only signed dones: at
// most one instance is out of running at any moment, by the registry (the
// instances' own writes) and by the instances' transitions, and all three
// come back in new process images.
func TestARedisWriterWithoutTheKeyCannotHurryARollingRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cmd/demo processes")
	}
	demos := startDemos(t, 3, "SG_DRAIN_DELAY="+rollDrain)
	rdb := demos.srv.Client(t)
	since := time.Now()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var sampler outOfRunningTrue
	f := &forger{rdb: demos.srv.Client(t)}
	wg.Add(2)
	go func() { defer wg.Done(); sampler.poll(ctx, demos.reg, demos.ids) }()
	go func() { defer wg.Done(); f.run(ctx, demos.ids) }()
	stop := func() { cancel(); wg.Wait() }
	defer stop()

	env := map[string]string{"REDIS_URL": demos.srv.URL(), "SG_CONTROL_KEY": testKey}
	start := time.Now()
	res := sgctl(t, t.Context(), env, nil, "restart", "demo", "--max-unavailable", "1", "--wait", "--timeout", "60s")
	took := time.Since(start)
	stop()
	if res.code != exitOK {
		t.Errorf("sgctl restart exit code %d, want 0", res.code)
	}
	byEvents, atEvents, n, final := outOfRunningByEvents(t, rdb, demos.ids, since)
	for _, id := range demos.ids {
		// Each went through a boot (registering) and is running again, as a new
		// image of the same process.
		if final[id] != "running/booted" {
			t.Errorf("%s: last transition to %q, want running after a boot", id, final[id])
		}
		select {
		case <-demos.procs[id].Done():
			t.Errorf("%s: the process exited instead of replacing itself", id)
		default:
		}
	}
	t.Logf("rollout of 3 took %v; forger: %d slot deletions, %d forged results, %d forged entries; "+
		"registry: %d samples, at most %d out of running (%v); transitions: %d, at most %d out (%v)",
		took, f.deletes, f.results, f.registry, sampler.samples, sampler.max, sampler.at, n, byEvents, atEvents)
	if sampler.max != 1 || byEvents != 1 {
		t.Errorf("at most %d (registry) and %d (transitions) out of running at once, want exactly 1 (each instance in turn)", sampler.max, byEvents)
	}
	if f.deletes < 10 || f.results < 6 || f.registry < 3 {
		t.Errorf("the forger did too little during the rollout: %d deletions, %d results, %d entries", f.deletes, f.results, f.registry)
	}
}
