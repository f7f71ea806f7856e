package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/phases"
)

func TestEveryBootAndShutdownStateHasAStepAndEveryStepAState(t *testing.T) {
	if err := checkSteps(phases.Lifecycle(), lifecycleSteps); err != nil {
		t.Fatalf("the lifecycle's step table: %v", err)
	}
	for _, s := range append(phases.Lifecycle().StatesIn(phases.GroupBoot), phases.Lifecycle().StatesIn(phases.GroupShutdown)...) {
		missing := maps.Clone(lifecycleSteps)
		delete(missing, s)
		if err := checkSteps(phases.Lifecycle(), missing); err == nil || !strings.Contains(err.Error(), string(s)) {
			t.Errorf("without a step for %s: %v, want an error naming it", s, err)
		}
	}
	extra := maps.Clone(lifecycleSteps)
	extra["warming_up"] = step{}
	if err := checkSteps(phases.Lifecycle(), extra); err == nil || !strings.Contains(err.Error(), "warming_up") {
		t.Errorf("a step for a state the table lacks: %v, want an error naming it", err)
	}
	undoesNothing := maps.Clone(lifecycleSteps)
	undoesNothing[phases.Deregistering] = step{work: (*Instance).deregister, undoes: phases.Running}
	if err := checkSteps(phases.Lifecycle(), undoesNothing); err == nil || !strings.Contains(err.Error(), "deregistering") {
		t.Errorf("a shutdown step that undoes no boot state: %v, want an error naming it", err)
	}
	grown := phases.Lifecycle()
	grown.States = append(grown.States, phases.StateInfo{Name: "warming_up", Group: phases.GroupBoot})
	if err := checkSteps(grown, lifecycleSteps); err == nil || !strings.Contains(err.Error(), "warming_up") {
		t.Errorf("a boot state without a step: %v, want an error naming it", err)
	}
	if _, err := New(nopService{}, WithoutHealthServer(), optionFunc(func(c *config) { c.table = grown })); err == nil {
		t.Error("New accepted a table with a boot state that has no step")
	}
}

// Adding a boot phase is one row in package phases and one step here (the
// recipe is in docs/diagrams.md). This walks it on copies of both tables: a
// warming_up phase between building_adapters and starting, then a boot.
func Example_addBootPhase() {
	const (
		warmingUp phases.State = "warming_up"
		warmed    phases.Event = "warmed"
	)
	// 1. phases/lifecycle.go: the state's row in the boot group, where it
	// runs, and its edge; the edge that led to starting now leads to it.
	t := phases.Lifecycle()
	at := slices.IndexFunc(t.States, func(s phases.StateInfo) bool { return s.Name == phases.Starting })
	t.States = slices.Insert(t.States, at, phases.StateInfo{Name: warmingUp, Group: phases.GroupBoot, Hook: "caches warmed", Doc: "the caches are filled"})
	// Its number (7) and the later phases' come from the order; stop and
	// fail leave it as they leave every boot phase (FromGroups).
	for i, tr := range t.Transitions {
		if tr.Event == phases.AdaptersBuilt {
			t.Transitions[i].To = warmingUp
		}
	}
	t.Transitions = append(t.Transitions, phases.Transition{Event: warmed, From: []phases.State{warmingUp}, To: phases.Starting})

	// 2. steps.go: its step.
	steps := maps.Clone(lifecycleSteps)
	steps[warmingUp] = step{work: func(in *Instance, ctx context.Context) (phases.Event, error) {
		fmt.Println("  (filling the caches)")
		return "", nil // "": the state's one way forward, warmed
	}}

	in, err := New(nopService{},
		WithoutHealthServer(),
		WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		optionFunc(func(c *config) { c.table, c.steps = t, steps }),
		WithTransitionObserver(lifecycle.ObserverFunc(func(_ context.Context, tr lifecycle.Transition) {
			if tr.Phase.Group == phases.GroupBoot {
				fmt.Printf("phase %s %s (%s)\n", tr.Phase.Label, tr.To, tr.Event)
			}
		})),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer in.Close()
	if err := in.Boot(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	defer in.Shutdown(context.Background())
	fmt.Println("state:", in.State())
	// Output:
	// phase 2 connecting (connect)
	// phase 3 configuring (ping_skipped)
	// phase 4 instrumenting (configured)
	// phase 5 loading_modules (instrumented)
	// phase 6 building_adapters (modules_loaded)
	// phase 7 warming_up (adapters_built)
	//   (filling the caches)
	// phase 8 starting (warmed)
	// phase 9 registering (started)
	// phase 10 serving_health (registered)
	// state: running
}
