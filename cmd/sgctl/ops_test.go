package main

import (
	"context"
	"encoding/json"
	"errors"
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

const testKey = "0123456789abcdef-test-key"

// responder stands in for the instances' control-ops daemons: it reads the
// service's op stream and lets the test decide each instance's results and
// registry entries. It is stopped and awaited by t.Cleanup.
type responder struct {
	t       *testing.T
	c       *redis.Client
	reg     *registry.Registry
	service string
	// act is called for each op and each instance it addresses, and returns
	// the results to write (in order) and the entry to register afterwards
	// (nil: unchanged).
	act func(o controlops.Op, e registry.Entry) ([]controlops.Status, []string, *registry.Entry)

	mu  sync.Mutex
	ops []controlops.Op
}

func startResponder(t *testing.T, mr *miniredis.Miniredis, service string, entries []registry.Entry,
	act func(o controlops.Op, e registry.Entry) ([]controlops.Status, []string, *registry.Entry)) *responder {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	r := &responder{t: t, c: c, reg: registry.New(c), service: service, act: act}
	for _, e := range entries {
		if err := r.reg.Register(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.loop(ctx) }()
	t.Cleanup(func() { cancel(); _ = c.Close(); <-done })
	return r
}

func (r *responder) loop(ctx context.Context) {
	last := "0"
	for ctx.Err() == nil {
		streams, err := r.c.XRead(ctx, &redis.XReadArgs{Streams: []string{controlops.StreamKey(r.service), last}, Block: 50 * time.Millisecond}).Result()
		if err != nil {
			continue // redis.Nil on timeout; closed client at the end
		}
		for _, m := range streams[0].Messages {
			last = m.ID
			o, err := controlops.Parse(m.Values)
			if err != nil {
				r.t.Errorf("sgctl sent a malformed entry: %v", err)
				continue
			}
			o.StreamID = m.ID
			r.mu.Lock()
			r.ops = append(r.ops, o)
			r.mu.Unlock()
			keyID, _ := controlops.VerifyAny([][]byte{[]byte(testKey)}, r.service, o) // "" when not signed with it
			entries, _ := r.reg.Instances(ctx, r.service)
			for _, e := range entries {
				if !o.Addressed(e.Instance) {
					continue
				}
				statuses, reasons, next := r.act(o, e)
				for i, st := range statuses {
					pid := e.PID
					if next != nil {
						pid = next.PID
					}
					reason := ""
					if i < len(reasons) {
						reason = reasons[i]
					}
					if i == len(statuses)-1 && next != nil {
						_ = r.reg.Register(ctx, *next)
					}
					res := controlops.Result{OpID: o.ID, Op: o.Name, Entry: o.StreamID, Instance: e.Instance, Status: st,
						Reason: reason, At: time.Now(), State: "running", PID: pid}
					if keyID != "" { // signed as a daemon signs the results of the ops its key verified
						res = controlops.SignResult([]byte(testKey), r.service, res)
					}
					r.c.XAdd(ctx, &redis.XAddArgs{Stream: controlops.ResultsKey(r.service), Values: map[string]any{
						"op_id": res.OpID, "op": res.Op, "entry": res.Entry, "instance": res.Instance, "status": string(res.Status),
						"reason": res.Reason, "at": strconv.FormatInt(res.At.UnixMilli(), 10), "state": res.State, "pid": strconv.Itoa(res.PID),
						"key_id": res.KeyID, "sig": res.Sig,
					}})
				}
			}
		}
	}
}

func (r *responder) sent() []controlops.Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]controlops.Op(nil), r.ops...)
}

func runningDemo(n int) []registry.Entry {
	var out []registry.Entry
	started := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	for i := range n {
		out = append(out, registry.Entry{Service: "demo", Instance: "demo-" + strconv.Itoa(i+1), Status: "running", Host: "h", PID: 100 + i, StartedAt: started})
	}
	return out
}

// restarted is what a restart leaves in the registry: the same instance,
// running, as a new process.
func restarted(e registry.Entry) *registry.Entry {
	e.PID += 1000
	e.StartedAt = time.Now()
	return &e
}

func TestOpWithoutKeyIsSentUnsignedWithAWarning(t *testing.T) {
	mr := miniredis.RunT(t)
	r := startResponder(t, mr, "demo", runningDemo(1), func(controlops.Op, registry.Entry) ([]controlops.Status, []string, *registry.Entry) {
		return nil, nil, nil
	})
	res := sgctl(t, t.Context(), map[string]string{"REDIS_URL": "redis://" + mr.Addr()}, nil, "pull", "demo")
	if res.code != exitOK || !strings.Contains(res.stderr, "SG_CONTROL_KEY is unset") {
		t.Fatalf("got %d %q, want exit 0 and a warning naming SG_CONTROL_KEY", res.code, res.stderr)
	}
	eventually(t, 5*time.Second, func() bool { return len(r.sent()) == 1 }, func() string { return "the responder saw no op" })
	if err := controlops.Verify([]byte(testKey), "demo", r.sent()[0]); !errors.Is(err, controlops.ErrUnsigned) {
		t.Errorf("Verify = %v, want ErrUnsigned", err)
	}
}

func TestPullWaitExitsZeroWhenEveryRunningInstanceIsDone(t *testing.T) {
	mr := miniredis.RunT(t)
	entries := append(runningDemo(2), registry.Entry{Service: "demo", Instance: "demo-booting", Status: "configuring", Phase: "3", PID: 9})
	startResponder(t, mr, "demo", entries, func(o controlops.Op, e registry.Entry) ([]controlops.Status, []string, *registry.Entry) {
		return []controlops.Status{controlops.StatusDone}, nil, nil
	})
	env := map[string]string{"REDIS_URL": "redis://" + mr.Addr(), "SG_CONTROL_KEY": testKey}
	res := sgctl(t, t.Context(), env, nil, "pull", "demo", "--wait", "--timeout", "10s")
	if res.code != exitOK {
		t.Fatalf("exit code %d, want 0", res.code)
	}
	for _, want := range []string{"demo-1  done", "demo-2  done", "2/2 instances done and serving"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if !strings.Contains(res.stderr, "demo-booting is configuring, not running") {
		t.Errorf("stderr does not say the booting instance is not waited for: %q", res.stderr)
	}
}

func TestRestartWaitShowsEachResultAndTheNewProcessRunning(t *testing.T) {
	mr := miniredis.RunT(t)
	startResponder(t, mr, "demo", runningDemo(2), func(o controlops.Op, e registry.Entry) ([]controlops.Status, []string, *registry.Entry) {
		return []controlops.Status{controlops.StatusAccepted, controlops.StatusDone}, nil, restarted(e)
	})
	env := map[string]string{"REDIS_URL": "redis://" + mr.Addr(), "SG_CONTROL_KEY": testKey}
	res := sgctl(t, t.Context(), env, nil, "restart", "demo", "--wait", "--json", "--timeout", "10s")
	if res.code != exitOK {
		t.Fatalf("exit code %d, want 0", res.code)
	}
	seen := map[string]bool{}
	var summary map[string]any
	for _, line := range strings.Split(strings.TrimSpace(res.stdout), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line does not decode: %v\n%s", err, line)
		}
		switch m["type"] {
		case "result":
			seen[m["instance"].(string)+" "+m["status"].(string)] = true
		case "status":
			if m["new_process"] == true && m["status"] == "running" {
				seen[m["instance"].(string)+" new running"] = true
			}
		case "summary":
			summary = m
		}
	}
	for _, want := range []string{"demo-1 accepted", "demo-1 done", "demo-2 accepted", "demo-2 done", "demo-1 new running", "demo-2 new running"} {
		if !seen[want] {
			t.Errorf("no %q line", want)
		}
	}
	if summary == nil || summary["ok"] != true {
		t.Errorf("summary %v, want ok", summary)
	}
}

func TestRestartWaitExits1NamingTheInstanceThatWasRejected(t *testing.T) {
	mr := miniredis.RunT(t)
	startResponder(t, mr, "demo", runningDemo(2), func(o controlops.Op, e registry.Entry) ([]controlops.Status, []string, *registry.Entry) {
		if e.Instance == "demo-2" {
			return []controlops.Status{controlops.StatusRejected}, []string{"bad signature"}, nil
		}
		return []controlops.Status{controlops.StatusAccepted, controlops.StatusDone}, nil, restarted(e)
	})
	env := map[string]string{"REDIS_URL": "redis://" + mr.Addr(), "SG_CONTROL_KEY": testKey}
	res := sgctl(t, t.Context(), env, nil, "restart", "demo", "--wait", "--timeout", "10s")
	if res.code != exitFailed {
		t.Fatalf("exit code %d, want 1", res.code)
	}
	if !strings.Contains(res.stdout, "failed: demo-2 (rejected: bad signature)") {
		t.Errorf("summary does not name demo-2 and the reason:\n%s", res.stdout)
	}
}

func TestWaitTimesOutNamingTheInstanceThatNeverAnswered(t *testing.T) {
	mr := miniredis.RunT(t)
	startResponder(t, mr, "demo", runningDemo(2), func(o controlops.Op, e registry.Entry) ([]controlops.Status, []string, *registry.Entry) {
		if e.Instance == "demo-2" {
			return nil, nil, nil // a daemon that never answers
		}
		return []controlops.Status{controlops.StatusDone}, nil, nil
	})
	env := map[string]string{"REDIS_URL": "redis://" + mr.Addr(), "SG_CONTROL_KEY": testKey}
	res := sgctl(t, t.Context(), env, nil, "pull", "demo", "--wait", "--timeout", "500ms")
	if res.code != exitFailed {
		t.Fatalf("exit code %d, want 1", res.code)
	}
	if !strings.Contains(res.stdout, "timed out waiting for: demo-2 (no result)") || strings.Contains(res.stdout, "demo-1 (") {
		t.Errorf("summary does not name only demo-2:\n%s", res.stdout)
	}
}

func TestRestartWaitIsNotDoneUntilTheRegistryShowsANewProcess(t *testing.T) {
	mr := miniredis.RunT(t)
	// done arrives, but the entry still shows the old process: a restart
	// that did not replace the process is not a success.
	startResponder(t, mr, "demo", runningDemo(1), func(o controlops.Op, e registry.Entry) ([]controlops.Status, []string, *registry.Entry) {
		return []controlops.Status{controlops.StatusDone}, nil, nil
	})
	env := map[string]string{"REDIS_URL": "redis://" + mr.Addr(), "SG_CONTROL_KEY": testKey}
	res := sgctl(t, t.Context(), env, nil, "restart", "demo", "--wait", "--timeout", "500ms")
	if res.code != exitFailed || !strings.Contains(res.stdout, "demo-1 (not back within 500ms: done, not yet seen running in a new process)") {
		t.Fatalf("got %d, want 1 naming demo-1 as not seen serving:\n%s", res.code, res.stdout)
	}
}

func TestOpForAnUnknownInstanceOrServiceExits1(t *testing.T) {
	mr := miniredis.RunT(t)
	startResponder(t, mr, "demo", runningDemo(1), func(controlops.Op, registry.Entry) ([]controlops.Status, []string, *registry.Entry) {
		return nil, nil, nil
	})
	env := map[string]string{"REDIS_URL": "redis://" + mr.Addr(), "SG_CONTROL_KEY": testKey}
	res := sgctl(t, t.Context(), env, nil, "restart", "demo", "--instance", "demo-9")
	if res.code != exitFailed || !strings.Contains(res.stderr, `instance "demo-9" of service "demo" is not in the registry`) {
		t.Errorf("unknown instance: got %d %q", res.code, res.stderr)
	}
	res = sgctl(t, t.Context(), env, nil, "pull", "ghost", "--wait")
	if res.code != exitFailed || !strings.Contains(res.stderr, `service "ghost" has no live instances`) {
		t.Errorf("unknown service: got %d %q", res.code, res.stderr)
	}
}

func TestOpWaitNamesTheKeyThatVerifiedItAndWarnsAboutInstancesThatWillReject(t *testing.T) {
	mr := miniredis.RunT(t)
	entries := runningDemo(3)
	entries[0].Control, entries[1].Control, entries[2].Control = "signed", "disabled", "insecure"
	startResponder(t, mr, "demo", entries, func(o controlops.Op, e registry.Entry) ([]controlops.Status, []string, *registry.Entry) {
		if e.Control == "disabled" {
			return []controlops.Status{controlops.StatusRejected}, []string{"control ops are disabled"}, nil
		}
		return []controlops.Status{controlops.StatusDone}, nil, nil
	})
	env := map[string]string{"REDIS_URL": "redis://" + mr.Addr(), "SG_CONTROL_KEY": testKey + ",another-key-0123456789"}
	res := sgctl(t, t.Context(), env, nil, "pull", "demo", "--wait", "--timeout", "10s")
	if res.code != exitFailed {
		t.Fatalf("exit code %d, want 1 (demo-2 rejects)", res.code)
	}
	id := controlops.KeyID([]byte(testKey))
	if !strings.Contains(res.stdout, "demo-1  done      state running, pid 100, key "+id) {
		t.Errorf("output does not name the key %s that verified the op:\n%s", id, res.stdout)
	}
	if !strings.Contains(res.stderr, "demo/demo-2 has control ops disabled") || strings.Contains(res.stderr, "demo-1 has") || strings.Contains(res.stderr, "demo-3 has") {
		t.Errorf("stderr %q, want a warning about demo-2 only", res.stderr)
	}
	// Without a key: the instances that require signed ops are named.
	res = sgctl(t, t.Context(), map[string]string{"REDIS_URL": "redis://" + mr.Addr()}, nil, "pull", "demo")
	if !strings.Contains(res.stderr, "demo/demo-1 requires signed ops") || strings.Contains(res.stderr, "demo-3 requires") {
		t.Errorf("stderr %q, want a warning about demo-1", res.stderr)
	}
}

// sgctl exports no span: it mints the op's trace context, sampled, and
// prints its trace id, which every instance's spans then share.
func TestOpCarriesASampledTraceparentWhoseTraceIDIsPrinted(t *testing.T) {
	mr := miniredis.RunT(t)
	r := startResponder(t, mr, "demo", runningDemo(1), func(controlops.Op, registry.Entry) ([]controlops.Status, []string, *registry.Entry) {
		return nil, nil, nil
	})
	env := map[string]string{"REDIS_URL": "redis://" + mr.Addr(), "SG_CONTROL_KEY": testKey}
	res := sgctl(t, t.Context(), env, nil, "pull", "demo")
	if res.code != exitOK {
		t.Fatalf("got %d %q", res.code, res.stderr)
	}
	eventually(t, 5*time.Second, func() bool { return len(r.sent()) == 1 }, func() string { return "the responder saw no op" })
	parts := strings.Split(r.sent()[0].Traceparent, "-")
	if len(parts) != 4 || parts[0] != "00" || parts[3] != "01" || strings.Trim(parts[1], "0") == "" {
		t.Fatalf("traceparent %q, want a sampled W3C trace context", r.sent()[0].Traceparent)
	}
	if !strings.Contains(res.stdout, "trace "+parts[1]) {
		t.Errorf("output %q does not print the trace id %s", res.stdout, parts[1])
	}
}
