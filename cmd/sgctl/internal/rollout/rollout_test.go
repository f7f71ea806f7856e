package rollout

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/cmd/sgctl/internal/optrack"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testKey = []byte("rollout-test-key-0123456789abcdef")

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fleet is a service "demo" on a real redis-server. Its instances are
// fakes (no process runs here): the test answers each op itself, as an
// instance's daemon would, through answer.
type fleet struct {
	rdb redis.UniversalClient
	reg *registry.Registry

	mu      sync.Mutex
	entries map[string]registry.Entry
	sent    []controlops.Op // by OnSent, in order
	back    []string        // by OnBack, in order
	results []controlops.Result
	opSent  chan controlops.Op
	result  chan controlops.Result
}

func newFleet(t *testing.T, n int) *fleet {
	t.Helper()
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	f := &fleet{rdb: rdb, reg: registry.New(rdb, registry.WithLogger(quiet)), entries: map[string]registry.Entry{},
		opSent: make(chan controlops.Op, 64), result: make(chan controlops.Result, 1024)}
	for i := 1; i <= n; i++ {
		e := registry.Entry{Service: "demo", Instance: fmt.Sprintf("demo-%d", i), Status: "running", Host: "h1", PID: 100 + i,
			StartedAt: time.Now().Add(-time.Hour).Truncate(time.Millisecond).UTC(), Control: "signed"}
		f.entries[e.Instance] = e
		if err := f.reg.Register(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// rollout returns a Rollout over f whose callbacks record into f.
func (f *fleet) rollout(maxUnavailable int, timeout time.Duration) *Rollout {
	return &Rollout{Registry: f.reg, Client: controlops.NewClient(f.rdb, testKey), MaxUnavailable: maxUnavailable,
		Timeout: timeout, Every: 20 * time.Millisecond,
		OnSent: func(_ string, o controlops.Op) {
			f.mu.Lock()
			f.sent = append(f.sent, o)
			f.mu.Unlock()
			f.opSent <- o
		},
		OnResult: func(r controlops.Result) {
			f.mu.Lock()
			f.results = append(f.results, r)
			f.mu.Unlock()
			f.result <- r
		},
		OnBack: func(in string) { f.mu.Lock(); f.back = append(f.back, in); f.mu.Unlock() },
	}
}

func (f *fleet) plan(t *testing.T) *optrack.Plan {
	t.Helper()
	live, err := f.reg.Instances(t.Context(), "demo")
	if err != nil {
		t.Fatal(err)
	}
	p, err := optrack.NewPlan(controlops.OpRestart, "demo", "", live, true)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// run starts r.Run in a goroutine; wait returns its outcome.
func (f *fleet) run(t *testing.T, r *Rollout) (wait func() (Outcome, error)) {
	p := f.plan(t)
	type ret struct {
		o   Outcome
		err error
	}
	done := make(chan ret, 1)
	go func() { o, err := r.Run(t.Context(), p); done <- ret{o, err} }()
	return func() (Outcome, error) {
		select {
		case x := <-done:
			return x.o, x.err
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return within 30s")
			return Outcome{}, nil
		}
	}
}

// nextOp returns the next op sent, failing after 10s.
func (f *fleet) nextOp(t *testing.T) controlops.Op {
	t.Helper()
	select {
	case o := <-f.opSent:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no op sent within 10s")
		return controlops.Op{}
	}
}

// noOpSent fails if an op was sent and not yet taken by nextOp.
func (f *fleet) noOpSent(t *testing.T, why string) {
	t.Helper()
	select {
	case o := <-f.opSent:
		t.Fatalf("%s: an op was sent to %s", why, o.Target)
	default:
	}
}

// awaitResult returns once Run's OnResult saw a result matching ok.
func (f *fleet) awaitResult(t *testing.T, ok func(controlops.Result) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case r := <-f.result:
			if ok(r) {
				return
			}
		case <-deadline:
			t.Fatal("the result was not read within 10s")
		}
	}
}

// result appends a result of o, signed with key unless key is nil, with
// sig instead when set.
func (f *fleet) resultOf(t *testing.T, o controlops.Op, st controlops.Status, key []byte, sig string) {
	t.Helper()
	f.mu.Lock()
	e := f.entries[o.Target]
	f.mu.Unlock()
	r := controlops.Result{OpID: o.ID, Op: o.Name, Entry: o.StreamID, Instance: o.Target, Status: st, At: time.Now(), State: "running", PID: e.PID}
	if key != nil {
		r = controlops.SignResult(key, "demo", r)
	}
	if sig != "" {
		r.KeyID, r.Sig = controlops.KeyID(testKey), sig
	}
	err := f.rdb.XAdd(t.Context(), &redis.XAddArgs{Stream: controlops.ResultsKey("demo"), Values: map[string]any{
		"op_id": r.OpID, "op": r.Op, "entry": r.Entry, "instance": r.Instance, "status": string(r.Status),
		"at": strconv.FormatInt(r.At.UnixMilli(), 10), "state": r.State, "pid": strconv.Itoa(r.PID), "key_id": r.KeyID, "sig": r.Sig,
	}}).Err()
	if err != nil {
		t.Fatal(err)
	}
}

// restarted registers o's instance as running in a new process (the real
// instance's new process, or a forger's entry: the registry cannot tell).
func (f *fleet) restarted(t *testing.T, instance string) {
	t.Helper()
	f.mu.Lock()
	e := f.entries[instance]
	e.PID += 1000
	e.StartedAt = time.Now().UTC()
	f.entries[instance] = e
	f.mu.Unlock()
	if err := f.reg.Register(t.Context(), e); err != nil {
		t.Fatal(err)
	}
}

// answer does what a daemon and the new process do for a restart that
// works: accepted, the new process running in the registry, a signed done.
func (f *fleet) answer(t *testing.T, o controlops.Op) {
	t.Helper()
	f.resultOf(t, o, controlops.StatusAccepted, testKey, "")
	f.restarted(t, o.Target)
	f.resultOf(t, o, controlops.StatusDone, testKey, "")
}

// Run sends one signed restart per instance, addressed to it, and never
// has more than MaxUnavailable unanswered: the next op goes out only when
// an instance is back. The test answers only once it has seen exactly as
// many ops as may be in flight, and checks that no other was sent.
func TestRunSendsTheNextOpOnlyWhenAnInstanceIsBack(t *testing.T) {
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprintf("max_unavailable %d", n), func(t *testing.T) {
			f := newFleet(t, 4)
			wait := f.run(t, f.rollout(n, 10*time.Second))
			var held []controlops.Op
			for answered := 0; answered < 4; answered++ {
				for len(held) < n && answered+len(held) < 4 {
					held = append(held, f.nextOp(t))
				}
				f.noOpSent(t, fmt.Sprintf("%d in flight, %d back", len(held), answered))
				f.answer(t, held[0])
				held = held[1:]
			}
			o, err := wait()
			if err != nil || !o.OK() || len(o.Done) != 4 {
				t.Fatalf("Run = %+v, %v; want all 4 done", o, err)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			seen := map[string]bool{}
			for _, op := range f.sent {
				if op.Name != controlops.OpRestart || op.Target == controlops.TargetAll || seen[op.Target] || len(op.Args) > 0 {
					t.Errorf("sent %s to %q with args %s, want one restart without args to each instance", op.Name, op.Target, op.Args)
				}
				seen[op.Target] = true
				if err := controlops.Verify(testKey, "demo", op); err != nil {
					t.Errorf("the op to %s does not verify: %v", op.Target, err)
				}
			}
		})
	}
}

// A Redis writer without the key writes, for the instance in flight, an
// unsigned done, a done with a bad signature and a registry entry saying it
// runs in a new process. None of it lets the next op out: the rollout
// waits for the instance's signed done. (The signed accepted written after
// them shows that Client.Wait read past them without stopping.)
func TestForgedDonesAndEntriesDoNotLetTheNextOpOut(t *testing.T) {
	f := newFleet(t, 2)
	wait := f.run(t, f.rollout(1, 10*time.Second))
	first := f.nextOp(t)
	f.resultOf(t, first, controlops.StatusDone, nil, "")
	f.resultOf(t, first, controlops.StatusDone, nil, "00"+first.ID[:8])
	f.resultOf(t, first, controlops.StatusDone, []byte("another-key-0123456789abcdef"), "")
	f.restarted(t, first.Target)
	f.resultOf(t, first, controlops.StatusAccepted, testKey, "")
	f.awaitResult(t, func(r controlops.Result) bool { return r.Status == controlops.StatusAccepted && r.Verified })
	f.noOpSent(t, "after three forged dones and a forged entry")

	f.resultOf(t, first, controlops.StatusDone, testKey, "")
	second := f.nextOp(t)
	f.answer(t, second)
	o, err := wait()
	if err != nil || fmt.Sprint(o.Done) != fmt.Sprintf("[%s %s]", first.Target, second.Target) {
		t.Fatalf("Run = %+v, %v; want both done in turn", o, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	forged := 0
	for _, r := range f.results {
		if r.Status == controlops.StatusDone && !r.Verified {
			forged++
		}
	}
	if forged != 3 {
		t.Errorf("OnResult saw %d unverified dones, want the 3 forged ones (shown, not believed)", forged)
	}
}

// The first instance that does not come back stops the rollout: no
// further op, the rest named as not sent.
func TestAFailedOrLateInstanceStopsTheRollout(t *testing.T) {
	t.Run("failed", func(t *testing.T) {
		f := newFleet(t, 3)
		wait := f.run(t, f.rollout(1, 10*time.Second))
		first := f.nextOp(t)
		f.resultOf(t, first, controlops.StatusFailed, testKey, "")
		o, err := wait()
		if err != nil || o.OK() || fmt.Sprint(o.Failed) != "["+first.Target+"]" || len(o.NotSent) != 2 {
			t.Fatalf("Run = %+v, %v; want %s failed and 2 not sent", o, err, first.Target)
		}
		f.noOpSent(t, "after a failure")
	})
	t.Run("not back in time", func(t *testing.T) {
		f := newFleet(t, 2)
		wait := f.run(t, f.rollout(1, 300*time.Millisecond))
		first := f.nextOp(t)
		f.resultOf(t, first, controlops.StatusDone, testKey, "") // done, but never seen in a new process
		o, err := wait()
		if err != nil || fmt.Sprint(o.Missing) != "["+first.Target+"]" || len(o.NotSent) != 1 {
			t.Fatalf("Run = %+v, %v; want %s missing and 1 not sent", o, err, first.Target)
		}
		if why := o.Why[first.Target]; why != "not back within 300ms: done, not yet seen running in a new process" {
			t.Errorf("why = %q", why)
		}
		f.noOpSent(t, "after a timeout")
	})
}
