package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

const testControlKey = "dashboard-test-key-0123456789"

// member is one instance for the op tests: a real controlops daemon whose
// target keeps the instance's registry entry, as the lifecycle does, and
// drains and undrains in the statuses the lifecycle does.
type member struct {
	reg *registry.Registry

	mu sync.Mutex
	e  registry.Entry
}

func (m *member) Service() string  { return m.e.Service }
func (m *member) Instance() string { return m.e.Instance }
func (m *member) State() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.e.Status
}

// Restartable reads the entry's status in the lifecycle table, as the
// lifecycle reads its state.
func (m *member) Restartable() bool {
	r := phases.Lifecycle().Role(phases.State(m.State()))
	return r == phases.RoleServing || r == phases.RoleDraining
}

func (m *member) Do(ctx context.Context, op string, _ json.RawMessage) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	from, to := map[string]string{controlops.OpDrain: "running", controlops.OpUndrain: "draining"}[op], map[string]string{controlops.OpDrain: "draining", controlops.OpUndrain: "running"}[op]
	switch {
	case from == "":
		return fmt.Errorf("%w: %q", controlops.ErrUnknownOp, op)
	case m.e.Status != from:
		return fmt.Errorf("%w: %q in %q", controlops.ErrInvalidState, op, m.e.Status)
	}
	m.e.Status = to
	m.e.UpdatedAt = time.Now().UTC()
	return m.reg.Register(ctx, m.e)
}

// startMember registers e and runs its daemon, signed with testControlKey,
// until the test ends.
func startMember(t *testing.T, r *rig, e registry.Entry) {
	t.Helper()
	m := &member{reg: registry.New(r.rdb), e: e}
	if err := m.reg.Register(t.Context(), e); err != nil {
		t.Fatal(err)
	}
	d, err := controlops.New(r.rdb, m, controlops.WithKey([]byte(testControlKey)), controlops.WithBlock(100*time.Millisecond),
		controlops.WithLogger(r.srv.cfg.Logger))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop(context.Background()) })
}

// opLines posts an op and returns its NDJSON lines by type (each type's
// lines in order).
func opLines(t *testing.T, r *rig, body string) map[string][]map[string]any {
	t.Helper()
	res := r.post(t, "/api/op", "application/json", body)
	if res.code != http.StatusOK || res.hdr.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("POST /api/op %s = %d %s %q", body, res.code, res.hdr.Get("Content-Type"), res.body)
	}
	out := map[string][]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(res.body), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		out[m["type"].(string)] = append(out[m["type"].(string)], m)
	}
	return out
}

func TestDrainThenUndrainFromTheDashboardTakesAnInstanceOutOfRotationAndBack(t *testing.T) {
	r, _ := miniRig(t, func(c *Config) { c.ControlKey = []byte(testControlKey) })
	startMember(t, r, entry("demo", "demo-1", "running"))
	startMember(t, r, entry("demo", "demo-2", "running"))
	status := func() string {
		es, err := registry.New(r.rdb).Instances(t.Context(), "demo")
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, e := range es {
			s = append(s, e.Instance+" "+e.Status)
		}
		return strings.Join(s, ", ")
	}

	// Drain demo-1 alone.
	got := opLines(t, r, `{"service":"demo","instance":"demo-1","op":"drain"}`)
	sent := got["sent"][0]
	if fmt.Sprint(sent["instances"]) != "[demo-1]" || sent["until"] != "draining" || sent["target"] != "demo-1" || sent["signed"] != true || sent["warnings"] != nil {
		t.Errorf("sent %v, want demo-1 signed until draining, without warnings", sent)
	}
	if len(got["result"]) == 0 || got["result"][len(got["result"])-1]["status"] != "done" {
		t.Errorf("results %v, want demo-1 done", got["result"])
	}
	if len(got["status"]) != 1 || got["status"][0]["instance"] != "demo-1" || got["status"][0]["status"] != "draining" || got["status"][0]["new_process"] != false {
		t.Errorf("status lines %v, want demo-1 draining in the same process", got["status"])
	}
	if sum := got["summary"][0]; sum["ok"] != true || sum["failed"] != nil || sum["missing"] != nil {
		t.Errorf("summary %v, want ok", sum)
	}
	if s := status(); s != "demo-1 draining, demo-2 running" {
		t.Fatalf("after the drain the registry says %s", s)
	}
	// Only the drained instance can be undrained, only the other drained.
	for body, want := range map[string]string{
		`{"service":"demo","instance":"demo-2","op":"undrain"}`: `no instance of "demo" is draining`,
		`{"service":"demo","instance":"demo-1","op":"drain"}`:   `no instance of "demo" is running`,
	} {
		if res := r.post(t, "/api/op", "application/json", body); res.code != http.StatusConflict || !strings.Contains(res.body, want) {
			t.Errorf("POST /api/op %s = %d %q, want 409 with %q", body, res.code, res.body, want)
		}
	}

	// Undrain demo-1 alone: a whole service is addressed only by a
	// rolling restart.
	if res := r.post(t, "/api/op", "application/json", `{"service":"demo","op":"undrain"}`); res.code != http.StatusBadRequest ||
		!strings.Contains(res.body, "instance: missing") {
		t.Errorf("POST /api/op for every instance = %d %q, want 400 naming the instance", res.code, res.body)
	}
	got = opLines(t, r, `{"service":"demo","instance":"demo-1","op":"undrain"}`)
	sent = got["sent"][0]
	if fmt.Sprint(sent["instances"]) != "[demo-1]" || sent["until"] != "serving" || sent["target"] != "demo-1" || sent["warnings"] != nil {
		t.Errorf("sent %v, want demo-1 until serving, without warnings", sent)
	}
	for _, m := range append(got["result"], got["status"]...) {
		if m["instance"] != "demo-1" {
			t.Errorf("a line about %v, which was not sent the op: %v", m["instance"], m)
		}
	}
	if sum := got["summary"][0]; sum["ok"] != true {
		t.Errorf("summary %v, want ok", sum)
	}
	if s := status(); s != "demo-1 running, demo-2 running" {
		t.Errorf("after the undrain the registry says %s", s)
	}
}

func TestTheDrainAndUndrainButtonsFollowTheStatusesEachOpRunsFrom(t *testing.T) {
	r, _ := miniRig(t, func(c *Config) { c.ControlKey = []byte(testControlKey) })
	put(t, r.rdb, entry("demo", "demo-1", "running"))
	put(t, r.rdb, entry("demo", "demo-2", "draining"))
	for _, path := range []string{"/", "/service?name=demo", "/instance?service=demo&id=demo-2"} {
		body := r.get(t, path).body
		for _, want := range []string{
			`<button type="button" data-op="drain" hidden disabled>Drain</button>`,
			`<button type="button" data-op="undrain" hidden disabled>Undrain</button>`,
			`"ops":{"drain":["running"],"pull":["running"],"restart":["running","draining"],"undrain":["draining"]}`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("GET %s lacks %s", path, want)
			}
		}
	}
}

func TestEveryOpTheDashboardSendsHasASpecAndNoOther(t *testing.T) {
	for _, op := range []string{"restart", "pull", "drain", "undrain"} {
		if err := validOp(opRequest{Service: "demo", Instance: "demo-1", Op: op}); err != nil {
			t.Errorf("validOp(%s) = %v", op, err)
		}
	}
	for _, op := range []string{"", "reboot", "stop", "Drain"} {
		if err := validOp(opRequest{Service: "demo", Op: op}); err == nil || !strings.Contains(err.Error(), "want restart, pull, drain or undrain") {
			t.Errorf("validOp(%q) = %v, want the ops named", op, err)
		}
	}
	if err := validOp(opRequest{Service: "demo", Op: "drain", MaxUnavailable: 1}); err == nil {
		t.Errorf("validOp accepts max_unavailable for a drain")
	}
}
