package optrack

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/internal/tabletest"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

func TestEachOpRunsFromTheStatusesItsEventLeavesInTheLifecycleTable(t *testing.T) {
	want := map[string]Spec{
		"restart": {From: []string{"running", "draining"}, Until: phases.RoleServing, Fresh: true},
		"pull":    {From: []string{"running"}, Until: phases.RoleServing},
		"drain":   {From: []string{"running"}, Until: phases.RoleDraining},
		"undrain": {From: []string{"draining"}, Until: phases.RoleServing},
	}
	if got := Ops(); !slices.Equal(got, []string{"restart", "pull", "drain", "undrain"}) {
		t.Errorf("Ops() = %v", got)
	}
	table := phases.Lifecycle()
	for op, w := range want {
		s, ok := SpecOf(op)
		if !ok || fmt.Sprint(s) != fmt.Sprint(w) {
			t.Errorf("SpecOf(%q) = %+v %v, want %+v", op, s, ok, w)
		}
		for _, from := range s.From {
			if len(table.Alternatives(phases.Event(op), phases.State(from))) == 0 {
				t.Errorf("%s from %s: the lifecycle table has no such edge", op, from)
			}
		}
	}
	if _, ok := SpecOf("reboot"); ok {
		t.Errorf("SpecOf(reboot) found a spec")
	}
	s, _ := SpecOf("restart")
	s.From[0] = "changed"
	if again, _ := SpecOf("restart"); again.From[0] != "running" {
		t.Errorf("a caller changed the shared spec: %v", again.From)
	}
}

func TestAPlanSendsEachOpOnlyToTheInstancesWhoseStatusAcceptsIt(t *testing.T) {
	live := []registry.Entry{
		entry("demo-1", "running", "signed", 1),
		entry("demo-2", "draining", "signed", 2),
		entry("demo-3", "configuring", "signed", 3),
		entry("demo-4", "pulling", "signed", 4),
	}
	for op, want := range map[string][]string{
		"restart": {"demo-1", "demo-2"},
		"pull":    {"demo-1"},
		"drain":   {"demo-1"},
		"undrain": {"demo-2"},
	} {
		p, err := NewPlan(op, "demo", "", live, true)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(p.Instances, want) || p.Target != controlops.TargetAll || len(p.Addressed) != 4 {
			t.Errorf("%s: instances %v, target %q, %d addressed; want %v, *, 4", op, p.Instances, p.Target, len(p.Addressed), want)
		}
		var skipped []string
		for _, w := range p.Warnings {
			if w.Reason != WrongStatus {
				t.Errorf("%s: warning %v about %s, want only WrongStatus", op, w.Reason, w.Entry.Instance)
			}
			skipped = append(skipped, w.Entry.Instance)
		}
		for _, e := range live {
			if slices.Contains(want, e.Instance) == slices.Contains(skipped, e.Instance) || p.Runs(e.Instance) != slices.Contains(want, e.Instance) {
				t.Errorf("%s: %s (%s) is both or neither run and warned about: %v / %v", op, e.Instance, e.Status, p.Instances, skipped)
			}
		}
	}
}

func TestAPlanWarnsAboutTheInstancesThatWillRejectTheOp(t *testing.T) {
	live := []registry.Entry{
		entry("demo-1", "running", "signed", 1),
		entry("demo-2", "running", "disabled", 2),
		entry("demo-3", "running", "insecure", 3),
		entry("demo-4", "starting", "disabled", 4), // not sent: one warning, for its status
	}
	reasons := func(signed bool) map[string]Reason {
		p, err := NewPlan("pull", "demo", "", live, signed)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]Reason{}
		for _, w := range p.Warnings {
			if _, dup := m[w.Entry.Instance]; dup {
				t.Errorf("two warnings about %s", w.Entry.Instance)
			}
			m[w.Entry.Instance] = w.Reason
		}
		if !slices.Equal(p.Instances, []string{"demo-1", "demo-2", "demo-3"}) {
			t.Errorf("instances %v: a warned-about running instance is still sent the op", p.Instances)
		}
		return m
	}
	if got, want := reasons(true), map[string]Reason{"demo-2": ControlDisabled, "demo-3": UnsignedResults, "demo-4": WrongStatus}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("with a key: %v, want %v", got, want)
	}
	if got, want := reasons(false), map[string]Reason{"demo-1": SignedOnly, "demo-2": ControlDisabled, "demo-4": WrongStatus}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("without a key: %v, want %v", got, want)
	}
}

func TestAPlanForOneInstanceAddressesOnlyIt(t *testing.T) {
	live := []registry.Entry{entry("demo-1", "running", "signed", 1), entry("demo-2", "running", "signed", 2)}
	p, err := NewPlan("drain", "demo", "demo-2", live, true)
	if err != nil {
		t.Fatal(err)
	}
	if p.Target != "demo-2" || len(p.Addressed) != 1 || !slices.Equal(p.Instances, []string{"demo-2"}) || p.Runs("demo-1") {
		t.Errorf("plan %+v, want demo-2 alone", p)
	}
	p, _ = NewPlan("drain", "demo", "demo-9", live, true)
	if p.Target != "demo-9" || len(p.Addressed) != 0 || len(p.Instances) != 0 {
		t.Errorf("an instance not in the registry: %+v, want nothing addressed", p)
	}
	if _, err := NewPlan("reboot", "demo", "", live, true); !errors.Is(err, ErrUnknownOp) {
		t.Errorf("NewPlan(reboot) = %v, want ErrUnknownOp", err)
	}
}

func TestFollowingADrainAndAnUndrainEndsWhenEachInstanceIsInTheNewStatus(t *testing.T) {
	f := miniFleet(t)
	f.start(t, entry("demo-1", "running", "signed", 1))
	f.start(t, entry("demo-2", "running", "signed", 2))
	f.register(t, entry("demo-3", "configuring", "signed", 3)) // booting: no daemon yet

	for _, step := range []struct{ op, status string }{{"drain", "draining"}, {"undrain", "running"}} {
		p := f.plan(t, step.op)
		if !slices.Equal(p.Instances, []string{"demo-1", "demo-2"}) {
			t.Fatalf("%s: planned %v, want demo-1 and demo-2", step.op, p.Instances)
		}
		var s seen
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		out, err := s.tracker(f).Follow(ctx, p, f.send(t, p))
		cancel()
		if err != nil || !out.OK() {
			t.Fatalf("%s: Follow = %+v, %v; want every instance done and %s", step.op, out, err, step.status)
		}
		results, statuses := s.results(), s.statuses()
		slices.Sort(results)
		slices.Sort(statuses)
		want := []string{"demo-1 " + step.status, "demo-2 " + step.status}
		if !slices.Equal(results, []string{"demo-1 done", "demo-2 done"}) || !slices.Equal(statuses, want) {
			t.Errorf("%s: results %v, statuses %v; want each done and %v", step.op, results, statuses, want)
		}
		for _, e := range f.live(t) {
			if e.Instance != "demo-3" && e.Status != step.status {
				t.Errorf("after %s: %s is %s", step.op, e.Instance, e.Status)
			}
		}
	}
}

func TestARestartIsNotBackUntilTheRegistryShowsANewProcess(t *testing.T) {
	f := miniFleet(t)
	old := entry("demo-1", "running", "signed", 100)
	f.register(t, old)

	// done, but the entry still shows the old process.
	p := f.plan(t, "restart")
	o := f.send(t, p)
	f.result(t, o, "demo-1", controlops.StatusDone, 100)
	var s seen
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	out, err := s.tracker(f).Follow(ctx, p, o)
	cancel()
	if err != nil || out.OK() || !slices.Equal(out.Missing, []string{"demo-1"}) || out.Results["demo-1"].Status != controlops.StatusDone {
		t.Fatalf("Follow = %+v, %v; want demo-1 missing with its done result", out, err)
	}
	if len(s.statuses()) != 0 {
		t.Errorf("status changes %v reported for an entry that did not change", s.statuses())
	}

	// The new process: same instance, another pid and start.
	p = f.plan(t, "restart")
	o = f.send(t, p)
	f.result(t, o, "demo-1", controlops.StatusAccepted, 100)
	fresh := old
	fresh.PID, fresh.StartedAt = 200, time.Now().UTC()
	f.register(t, fresh)
	f.result(t, o, "demo-1", controlops.StatusDone, 200)
	s = seen{}
	ctx, cancel = context.WithTimeout(t.Context(), 10*time.Second)
	out, err = s.tracker(f).Follow(ctx, p, o)
	cancel()
	if err != nil || !out.OK() {
		t.Fatalf("Follow = %+v, %v; want demo-1 back", out, err)
	}
	if !slices.Equal(s.results(), []string{"demo-1 accepted", "demo-1 done"}) || !slices.Equal(s.statuses(), []string{"demo-1 running new"}) {
		t.Errorf("results %v, statuses %v; want accepted, done, and running in a new process", s.results(), s.statuses())
	}
}

func TestFollowNamesTheInstancesThatRejectedAndThoseThatNeverAnswered(t *testing.T) {
	f := miniFleet(t)
	f.start(t, entry("demo-1", "running", "signed", 1))
	f.start(t, entry("demo-2", "running", "disabled", 2))      // rejects every op
	f.register(t, entry("demo-3", "running", "signed", 3))     // its daemon never reads
	f.register(t, entry("demo-4", "configuring", "signed", 4)) // not planned
	p := f.plan(t, "pull")
	o := f.send(t, p)
	f.result(t, o, "demo-4", controlops.StatusRejected, 4) // not one of the plan's
	f.awaitFinal(t, o, "demo-1", "demo-2")                 // the deadline below is for demo-3 alone
	var s seen
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	out, err := s.tracker(f).Follow(ctx, p, o)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Follow error %v, want one wrapping the deadline", err)
	}
	if !slices.Equal(out.Failed, []string{"demo-2"}) || !slices.Equal(out.Missing, []string{"demo-3"}) || out.Results["demo-2"].Status != controlops.StatusRejected {
		t.Errorf("outcome %+v, want demo-2 rejected and demo-3 missing", out)
	}
	if _, ok := out.Results["demo-4"]; ok || slices.ContainsFunc(s.log, func(v string) bool { return strings.Contains(v, "demo-4") }) {
		t.Errorf("demo-4, which was not planned, was reported: %v", s.log)
	}
}

func TestFollowEndsAtOnceWhenRedisDies(t *testing.T) {
	srv := redistest.Server(t)
	f := newFleet(t, srv.Client(t))
	f.register(t, entry("demo-1", "running", "signed", 1))
	p := f.plan(t, "pull")
	o := f.send(t, p)
	srv.Kill()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	start := time.Now()
	out, err := (&Tracker{Registry: f.reg, Client: f.client}).Follow(ctx, p, o)
	took := time.Since(start)
	if err == nil || ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Follow = %v after %v, want the Redis error before the deadline", err, took)
	}
	if took > 5*time.Second || !slices.Equal(out.Missing, []string{"demo-1"}) {
		t.Errorf("Follow took %v with %+v, want it back within 5s naming demo-1 as missing", took, out)
	}
}

func TestAPlanWithNothingToFollowReturnsAtOnce(t *testing.T) {
	f := miniFleet(t)
	f.register(t, entry("demo-1", "running", "signed", 1))
	p := f.plan(t, "undrain") // nothing is draining
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	out, err := (&Tracker{Registry: f.reg, Client: f.client}).Follow(ctx, p, f.send(t, p))
	if err != nil || !out.OK() || ctx.Err() != nil {
		t.Errorf("Follow = %+v, %v (ctx %v), want an empty outcome at once", out, err, ctx.Err())
	}
}

// withPausing is the lifecycle table grown by the recipe of
// docs/architecture.md: a control state, pausing, that pause takes a
// running instance to and resume takes back. Its role comes from its group
// (control: draining).
func withPausing(t *testing.T) *phases.Table {
	t.Helper()
	table := tabletest.Grown()
	if r := table.Role(tabletest.Pausing); r != phases.RoleDraining {
		t.Fatalf("pausing has role %q, want its group's, draining", r)
	}
	return table
}

func TestAControlStateAddedToTheTableIsNeverTakenForRunning(t *testing.T) {
	table := withPausing(t)
	specs := specsOf(table)

	// Planning: no lifecycle op leaves pausing, so an instance in it runs
	// none of them and is warned about.
	live := []registry.Entry{entry("demo-1", "running", "signed", 1), entry("demo-2", "pausing", "signed", 2)}
	for _, op := range Ops() {
		p, err := newPlan(table, specs, op, "demo", "", live, true)
		if err != nil {
			t.Fatal(err)
		}
		if p.Runs("demo-2") || !slices.ContainsFunc(p.Warnings, func(w Warning) bool { return w.Entry.Instance == "demo-2" && w.Reason == WrongStatus }) {
			t.Errorf("%s: demo-2 in pausing is planned %v, warnings %+v; want it skipped with WrongStatus", op, p.Instances, p.Warnings)
		}
	}

	// Following: a pull done by an instance that the registry then shows in
	// pausing is not back in running: pausing is out of rotation.
	f := miniFleet(t)
	one, two := entry("demo-1", "running", "signed", 1), entry("demo-2", "running", "signed", 2)
	f.register(t, one, two)
	p, err := newPlan(table, specs, "pull", "demo", "", f.live(t), true)
	if err != nil {
		t.Fatal(err)
	}
	o := f.send(t, p)
	paused := two
	paused.Status = "pausing"
	f.register(t, paused)
	f.result(t, o, "demo-1", controlops.StatusDone, 1)
	f.result(t, o, "demo-2", controlops.StatusDone, 2)
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	out, err := (&Tracker{Registry: f.reg, Client: f.client, Every: 20 * time.Millisecond}).Follow(ctx, p, o)
	cancel()
	if err != nil || out.OK() || !slices.Equal(out.Missing, []string{"demo-2"}) || len(out.Failed) != 0 {
		t.Errorf("pull: Follow = %+v, %v; want demo-1 back and demo-2, in pausing, missing", out, err)
	}

	// A drain leads out of rotation: by the table that has it, pausing is
	// there (role draining). By the lifecycle table, which does not have
	// it, a status without a role is nowhere.
	for _, c := range []struct {
		name  string
		table *phases.Table
		ok    bool
	}{{"with pausing", table, true}, {"lifecycle", phases.Lifecycle(), false}} {
		f.register(t, one)
		p, err := newPlan(c.table, specsOf(c.table), "drain", "demo", "demo-1", f.live(t), true)
		if err != nil {
			t.Fatal(err)
		}
		o := f.send(t, p)
		moved := one
		moved.Status = "pausing"
		f.register(t, moved)
		f.result(t, o, "demo-1", controlops.StatusDone, 1)
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		out, _ := (&Tracker{Registry: f.reg, Client: f.client, Every: 20 * time.Millisecond}).Follow(ctx, p, o)
		cancel()
		if out.OK() != c.ok {
			t.Errorf("drain by the %s table, instance in pausing: outcome %+v, want OK %v", c.name, out, c.ok)
		}
	}
}
