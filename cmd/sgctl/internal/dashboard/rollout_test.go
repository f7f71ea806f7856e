package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// restarter stands in for the instances of demo (no process runs here): it
// reads the op stream and, once gate is closed, answers each restart as a
// daemon and its new process do: accepted, the entry running in a new
// process, a done signed with the key.
type restarter struct {
	rdb  redis.UniversalClient
	reg  *registry.Registry
	gate chan struct{}

	mu   sync.Mutex
	ops  []controlops.Op
	seen chan controlops.Op
}

func (r *restarter) loop(ctx context.Context) {
	last := "0"
	for ctx.Err() == nil {
		streams, err := r.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{controlops.StreamKey("demo"), last}, Block: 50 * time.Millisecond}).Result()
		if err != nil {
			continue // redis.Nil on timeout; the end of ctx
		}
		for _, m := range streams[0].Messages {
			last = m.ID
			o, err := controlops.Parse(m.Values)
			if err != nil {
				continue
			}
			o.StreamID = m.ID
			r.mu.Lock()
			r.ops = append(r.ops, o)
			r.mu.Unlock()
			r.seen <- o
			select {
			case <-r.gate:
			case <-ctx.Done():
				return
			}
			e, err := r.reg.Entry(ctx, "demo", o.Target)
			if err != nil {
				continue
			}
			e.PID += 1000
			e.StartedAt = time.Now().UTC()
			for i, st := range []controlops.Status{controlops.StatusAccepted, controlops.StatusDone} {
				if i == 1 {
					_ = r.reg.Register(ctx, e)
				}
				res := controlops.SignResult([]byte(testControlKey), "demo", controlops.Result{OpID: o.ID, Op: o.Name, Entry: o.StreamID,
					Instance: o.Target, Status: st, At: time.Now(), State: "running", PID: e.PID})
				r.rdb.XAdd(ctx, &redis.XAddArgs{Stream: controlops.ResultsKey("demo"), Values: map[string]any{
					"op_id": res.OpID, "op": res.Op, "entry": res.Entry, "instance": res.Instance, "status": string(res.Status),
					"at": strconv.FormatInt(res.At.UnixMilli(), 10), "state": res.State, "pid": strconv.Itoa(res.PID),
					"key_id": res.KeyID, "sig": res.Sig,
				}})
			}
		}
	}
}

// The rolling restart form runs the rollout in the dashboard, as sgctl
// restart does: one signed op per instance, the next once the instance is
// back, its progress streamed to the page; and one rollout per service at
// a time: a second form sent meanwhile is refused with 409.
func TestTheRollingRestartFormRunsOneRolloutPerServiceOneInstanceAtATime(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	r := newRig(t, srv.Client(t), func(c *Config) { c.ControlKey = []byte(testControlKey) })
	reg := registry.New(rdb)
	for _, id := range []string{"demo-1", "demo-2"} {
		if err := reg.Register(t.Context(), entry("demo", id, "running")); err != nil {
			t.Fatal(err)
		}
	}
	rs := &restarter{rdb: rdb, reg: reg, gate: make(chan struct{}), seen: make(chan controlops.Op, 8)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); rs.loop(ctx) }()
	defer func() { cancel(); wg.Wait() }()

	const form = `{"service":"demo","op":"restart","rolling":true,"max_unavailable":1}`
	type reply struct {
		code int
		body string
	}
	first := make(chan reply, 1)
	csrf := pageCSRF(t, r.get(t, "/").body) // as the page sends it
	go func() {
		req, _ := http.NewRequest(http.MethodPost, r.http.URL+"/api/op", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-CSRF-Token", csrf)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			first <- reply{0, err.Error()}
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		first <- reply{res.StatusCode, string(b)}
	}()
	select {
	case o := <-rs.seen:
		if o.Target != "demo-1" {
			t.Fatalf("the first op went to %q, want demo-1", o.Target)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the rollout sent no op within 10s")
	}
	if second := r.post(t, "/api/op", "application/json", form); second.code != http.StatusConflict || !strings.Contains(second.body, `a rolling restart of "demo" is already running`) {
		t.Errorf("a second rolling restart meanwhile = %d %q, want 409", second.code, second.body)
	}
	close(rs.gate)
	var got reply
	select {
	case got = <-first:
	case <-time.After(30 * time.Second):
		t.Fatal("the rollout did not end within 30s")
	}
	if got.code != http.StatusOK {
		t.Fatalf("POST /api/op = %d %q", got.code, got.body)
	}
	var types []string
	var summary map[string]any
	for _, line := range strings.Split(strings.TrimSpace(got.body), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		switch m["type"] {
		case "rollout", "sent", "back":
			types = append(types, m["type"].(string)+" "+strings.Trim(jsonString(m["instance"]), `"`))
		case "summary":
			summary = m
		}
	}
	if want := "rollout null sent demo-1 back demo-1 sent demo-2 back demo-2"; strings.Join(types, " ") != want {
		t.Errorf("the rollout streamed %q, want %q", strings.Join(types, " "), want)
	}
	if summary["ok"] != true || jsonString(summary["done"]) != `["demo-1","demo-2"]` {
		t.Errorf("summary %v, want ok with demo-1 and demo-2 done", summary)
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, o := range rs.ops {
		if err := controlops.Verify([]byte(testControlKey), "demo", o); err != nil || o.Target == controlops.TargetAll || len(o.Args) > 0 {
			t.Errorf("op to %q (args %s): %v; want a signed op to one instance, without args", o.Target, o.Args, err)
		}
	}
	// Once it ended, the service may be rolled again.
	if _, ok := r.srv.rollouts.begin("demo", time.Now()); !ok {
		t.Errorf("the service's rollout is still marked as running")
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
