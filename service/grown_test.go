package service

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/internal/tabletest"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// The recipe of docs/architecture.md, followed on a copy of the table: a
// boot phase and a control state are their rows, their edges and the boot
// phase's step. The instance boots through the phase with the numbers the
// order gives, and the control state reads, on the health server, in the
// registry and to the control channel, as what its group says: out of
// rotation, alive however long it lasts, left by a stop.
func TestAGrownTableNeedsNoEditButItsRowsAndItsStep(t *testing.T) {
	f := newFixture(t)
	steps := maps.Clone(lifecycleSteps)
	warmed := false
	steps[tabletest.WarmingUp] = step{work: func(*Instance, context.Context) (phases.Event, error) {
		warmed = true
		return "", nil // warmed: the state's one way forward
	}}
	ran := make(chan struct{}, 1)
	in, done := f.run(t, newTestService(),
		optionFunc(func(c *config) { c.table, c.steps = tabletest.Grown(), steps }),
		WithHealthOption(health.WithStuckAfter(time.Minute)),
		WithControlKeys(testControlKey),
		WithOperation("ping", func(context.Context, json.RawMessage) error { ran <- struct{}{}; return nil }),
	)
	if !warmed {
		t.Error("warming_up's step did not run")
	}
	labels := map[phases.State]string{}
	for _, tr := range f.rec.transitions() {
		labels[tr.To] = tr.Phase.Label
	}
	if labels[tabletest.WarmingUp] != "7" || labels[phases.Starting] != "8" || labels[phases.ServingHealth] != "10" {
		t.Errorf("phase labels %v: want warming_up 7, starting 8, serving_health 10", labels)
	}
	if !strings.Contains(statesString(f.rec.path()), "building_adapters warming_up starting") {
		t.Errorf("boot path %v does not pass through warming_up", f.rec.path())
	}

	if err := in.m.Fire(context.Background(), tabletest.Pause); err != nil {
		t.Fatal(err)
	}
	// An hour in pausing: not ready, alive, never wedged.
	f.clock.Advance(time.Hour)
	if code := probeCode(t, in, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz in pausing = %d, want 503", code)
	}
	if code := probeCode(t, in, "/livez"); code != http.StatusOK {
		t.Errorf("/livez an hour into pausing = %d, want 200 (a control state is never wedged)", code)
	}
	if status, out := healthzCheck(t, in, health.LifecycleCheck); status != health.StatusWarn || !strings.Contains(out, "pausing") || !strings.Contains(out, "taking no new work") {
		t.Errorf("/healthz lifecycle check %s %q, want warn naming pausing and its doc", status, out)
	}
	reg := registry.New(f.client)
	pollUntil(t, 10*time.Second, "the registry entry says pausing", func() bool {
		e, err := reg.Entry(context.Background(), "svc", "i-1")
		return err == nil && e.Status == string(tabletest.Pausing)
	})
	// The control channel: a service's own op runs (pausing is at work), a
	// restart does not begin (no restart edge leaves pausing).
	if r := sendAndWait(t, f, "ping", nil); r.Status != controlops.StatusDone {
		t.Errorf("ping in pausing: %s %q, want done", r.Status, r.Reason)
	}
	<-ran
	if err := in.RequestRestart(); !errors.Is(err, lifecycle.ErrInvalidEvent) {
		t.Errorf("RequestRestart in pausing = %v, want an invalid event", err)
	}
	// A stop leaves it for the shutdown steps, as it leaves every control state.
	in.RequestStop()
	if err := wait(t, done); err != nil {
		t.Fatalf("Run = %v, want a clean stop", err)
	}
	if got := statesString(f.rec.path()); !strings.HasSuffix(got, "pausing stopping_daemons stopping_health deregistering cleaning_up stopped") {
		t.Errorf("path %s, want pausing then the shutdown steps", got)
	}
}
