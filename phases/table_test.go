package phases

import (
	"slices"
	"strings"
	"testing"
)

func TestLifecycleTableIsValid(t *testing.T) {
	if err := Lifecycle().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestEveryBootStateHasANumberedPhaseInOrder(t *testing.T) {
	for i, s := range Lifecycle().StatesIn(GroupBoot) {
		si, ok := Lifecycle().State(s)
		if !ok {
			t.Fatalf("boot state %q is not in the table", s)
		}
		if si.Number != i+1 {
			t.Errorf("state %q: phase number %d, want %d", s, si.Number, i+1)
		}
	}
}

func TestEveryNonTerminalStateHasAWayOut(t *testing.T) {
	for _, si := range Lifecycle().States {
		if si.Terminal {
			continue
		}
		out := false
		for _, e := range Lifecycle().Events() {
			if len(Lifecycle().Alternatives(e, si.Name)) > 0 {
				out = true
			}
		}
		if !out {
			t.Errorf("state %q has no outgoing transition", si.Name)
		}
	}
}

func TestStopIsValidFromEveryBootPhaseAndControlState(t *testing.T) {
	for _, s := range append(Lifecycle().StatesIn(GroupBoot), Pulling, Draining) {
		alts := Lifecycle().Alternatives(Stop, s)
		if len(alts) != 1 || alts[0].To != StoppingDaemons {
			t.Errorf("stop from %q: %v, want one transition to %q", s, alts, StoppingDaemons)
		}
	}
	for _, s := range append(Lifecycle().StatesIn(GroupBoot), Running, Pulling, Draining) {
		if alts := Lifecycle().Alternatives(Fail, s); len(alts) != 1 || alts[0].To != StoppingDaemons {
			t.Errorf("fail from %q: %v, want one transition to %q", s, alts, StoppingDaemons)
		}
	}
}

func TestStopAndRestartFromRunningDrainFirstOnlyWithADrainDelay(t *testing.T) {
	for _, ev := range []Event{Stop, Restart} {
		alts := Lifecycle().Alternatives(ev, Running)
		var labels []string
		for _, a := range alts {
			labels = append(labels, a.Label()+" -> "+string(a.To))
		}
		got := strings.Join(labels, ", ")
		want := strings.ReplaceAll("E [drain_delay] -> draining, E [not drain_delay] -> stopping_daemons", "E", string(ev))
		if got != want {
			t.Errorf("%s from running: %q, want %q", ev, got, want)
		}
	}
}

func TestDrainingIsAControlStateThatRunningEntersAndLeaves(t *testing.T) {
	si, ok := Lifecycle().State(Draining)
	if !ok || si.Group != GroupControl || si.Label != "" || si.Terminal {
		t.Fatalf("draining: %+v, %v; want a control state without a phase label", si, ok)
	}
	for _, tc := range []struct {
		event    Event
		from, to State
	}{
		{Drain, Running, Draining},
		{Undrain, Draining, Running},
		{Restart, Draining, StoppingDaemons},
	} {
		if alts := Lifecycle().Alternatives(tc.event, tc.from); len(alts) != 1 || alts[0].To != tc.to || alts[0].Guard.Name != "" {
			t.Errorf("%s from %s: %v, want one unguarded edge to %s", tc.event, tc.from, alts, tc.to)
		}
	}
	for _, s := range []State{Pulling, Draining, StoppingDaemons} {
		if alts := Lifecycle().Alternatives(Drain, s); len(alts) != 0 {
			t.Errorf("drain from %s: %v, want none", s, alts)
		}
	}
	if alts := Lifecycle().Alternatives(Pull, Draining); len(alts) != 0 {
		t.Errorf("pull from draining: %v, want none (pull_done would put it back in rotation)", alts)
	}
}

func TestValidateRejectsAmbiguousAlternatives(t *testing.T) {
	tbl := Table{
		Name:    "t",
		Initial: "a",
		States:  []StateInfo{{Name: "a"}, {Name: "b"}, {Name: "c"}},
		Transitions: []Transition{
			{Event: "go", From: []State{"a"}, To: "b"},
			{Event: "go", From: []State{"a"}, To: "c"},
		},
	}
	err := tbl.Validate()
	if err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Fatalf("Validate() = %v, want an ambiguity error", err)
	}
}

func TestValidateRejectsUndeclaredGuard(t *testing.T) {
	tbl := Table{
		Name:        "t",
		Initial:     "a",
		States:      []StateInfo{{Name: "a"}, {Name: "b"}},
		Transitions: []Transition{{Event: "go", From: []State{"a"}, To: "b", Guard: Guard{Name: "ready"}}},
	}
	if err := tbl.Validate(); err == nil || !strings.Contains(err.Error(), `"ready"`) {
		t.Fatalf("Validate() = %v, want an error naming the guard", err)
	}
}

func TestTransitionLabelShowsGuard(t *testing.T) {
	alts := Lifecycle().Alternatives(PingFailed, Connecting)
	var labels []string
	for _, a := range alts {
		labels = append(labels, a.Label())
	}
	got := strings.Join(labels, ", ")
	if got != "ping_failed [redis_required], ping_failed [not redis_required]" {
		t.Fatalf("labels = %q", got)
	}
}

func TestEveryStepHasTheEventThatCompletesIt(t *testing.T) {
	want := map[State]Event{
		Init: Connect, Configuring: Configured, Instrumenting: Instrumented, LoadingModules: ModulesLoaded,
		BuildingAdapters: AdaptersBuilt, Starting: Started, Registering: Registered, ServingHealth: HealthServing,
		StoppingDaemons: DaemonsStopped, StoppingHealth: HealthStopped, Deregistering: Deregistered, CleaningUp: CleanedUp,
	}
	for s, e := range want {
		if got, ok := NextEvent(Lifecycle(), s); !ok || got != e {
			t.Errorf("event completing %q = %q, %v; want %q", s, got, ok, e)
		}
	}
	if e, ok := NextEvent(Lifecycle(), Connecting); ok {
		t.Errorf("connecting has one completing event %q; want none (its ping outcomes decide)", e)
	}
}

func TestAStopOrAFailureLeavesAStateAddedToAnInterruptibleGroup(t *testing.T) {
	tbl := Lifecycle()
	tbl.States = append(tbl.States, StateInfo{Name: "pausing", Group: GroupControl})
	tbl.Transitions = append(tbl.Transitions,
		Transition{Event: "pause", From: []State{Running}, To: "pausing"},
		Transition{Event: "resume", From: []State{"pausing"}, To: Running})
	if err := tbl.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []Event{Stop, Fail} {
		if alts := tbl.Alternatives(ev, "pausing"); len(alts) != 1 || alts[0].To != StoppingDaemons {
			t.Errorf("%s from pausing: %v, want one edge to stopping_daemons", ev, alts)
		}
	}
	// Running keeps its own guarded stop edges: the group's edge does not
	// add a third.
	if alts := tbl.Alternatives(Stop, Running); len(alts) != 2 {
		t.Errorf("stop from running: %v, want its two guarded edges", alts)
	}
}

func TestLifecycleCannotBeChangedFromOutside(t *testing.T) {
	mine := Lifecycle()
	mine.States[0].Name = "changed"
	mine.Transitions[0].From[0] = "changed"
	stop := slices.IndexFunc(mine.Transitions, func(tr Transition) bool { return len(tr.FromGroups) > 0 })
	mine.Transitions[stop].FromGroups[0] = "changed"
	if again := Lifecycle(); again.States[0].Name != Init || again.Transitions[0].From[0] != Init {
		t.Fatal("a change to one copy of the table reached the next")
	}
	if again := Lifecycle(); again.Transitions[stop].FromGroups[0] != GroupBoot {
		t.Fatal("a change to a copy's FromGroups reached the next")
	}
}

func TestLabelsAndNumbersComeFromTheTablesOrder(t *testing.T) {
	tbl := Lifecycle()
	at := slices.IndexFunc(tbl.States, func(s StateInfo) bool { return s.Name == Starting })
	tbl.States = slices.Insert(tbl.States, at, StateInfo{Name: "warming_up", Group: GroupBoot})
	for _, tc := range []struct {
		state  State
		label  string
		number int
	}{
		{BuildingAdapters, "6", 6}, {"warming_up", "7", 7}, {Starting, "8", 8}, {ServingHealth, "10", 10},
		{StoppingDaemons, "S1", 0}, {CleaningUp, "S4", 0}, {Running, "", 0}, {Failed, "", 0},
	} {
		si, ok := tbl.State(tc.state)
		if !ok || si.Label != tc.label || si.Number != tc.number {
			t.Errorf("%s: label %q number %d, want %q and %d", tc.state, si.Label, si.Number, tc.label, tc.number)
		}
	}
	if got := tbl.AllStates()[at]; got.Name != "warming_up" || got.Label != "7" {
		t.Errorf("AllStates()[%d] = %+v, want warming_up labelled 7", at, got)
	}
}

func TestEveryLifecycleStateHasTheRoleOfItsMeaning(t *testing.T) {
	want := map[Group]Role{GroupBoot: RoleWorking, GroupRun: RoleServing, GroupControl: RoleDraining, GroupShutdown: RoleWorking}
	for _, si := range Lifecycle().AllStates() {
		switch {
		case si.Name == Stopped:
			if si.Role != RoleStopped {
				t.Errorf("stopped: role %q", si.Role)
			}
		case si.Name == Failed:
			if si.Role != RoleFailed {
				t.Errorf("failed: role %q", si.Role)
			}
		case si.Role != want[si.Group]:
			t.Errorf("%s (group %s): role %q, want %q", si.Name, si.Group, si.Role, want[si.Group])
		}
		if si.Role != Lifecycle().Role(si.Name) {
			t.Errorf("%s: Role() %q, AllStates %q", si.Name, Lifecycle().Role(si.Name), si.Role)
		}
	}
}

func TestValidateRejectsHandNumberedStatesOfANumberedGroup(t *testing.T) {
	tbl := Lifecycle()
	tbl.States[2].Label = "3"
	if err := tbl.Validate(); err == nil || !strings.Contains(err.Error(), string(tbl.States[2].Name)) {
		t.Fatalf("Validate() = %v, want an error naming %s", err, tbl.States[2].Name)
	}
}

func TestValidateRejectsRolesThatContradictTerminal(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Table)
	}{
		{"a terminal state that serves", func(t *Table) { t.States[len(t.States)-1].Role = RoleServing }},
		{"a failed state with a way out", func(t *Table) { t.States[0].Role = RoleFailed }},
		{"an unknown role", func(t *Table) { t.States[0].Role = "resting" }},
	} {
		tbl := Lifecycle()
		tc.edit(tbl)
		if err := tbl.Validate(); err == nil {
			t.Errorf("%s: Validate() = nil, want an error", tc.name)
		}
	}
}
