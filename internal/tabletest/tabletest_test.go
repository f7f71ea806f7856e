package tabletest_test

import (
	"testing"

	"github.com/stargazer/lifecycle/internal/tabletest"
	"github.com/stargazer/lifecycle/phases"
)

func TestTheGrownTableIsValidAndNumbersItsPhasesAnew(t *testing.T) {
	g := tabletest.Grown()
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	for s, label := range map[phases.State]string{phases.BuildingAdapters: "6", tabletest.WarmingUp: "7", phases.Starting: "8", phases.ServingHealth: "10", tabletest.Pausing: ""} {
		if si, _ := g.State(s); si.Label != label {
			t.Errorf("%s: label %q, want %q", s, si.Label, label)
		}
	}
	for _, s := range []phases.State{tabletest.WarmingUp, tabletest.Pausing} {
		for _, ev := range []phases.Event{phases.Stop, phases.Fail} {
			if alts := g.Alternatives(ev, s); len(alts) != 1 || alts[0].To != phases.StoppingDaemons {
				t.Errorf("%s from %s: %v, want one edge to stopping_daemons", ev, s, alts)
			}
		}
	}
	if g.Role(tabletest.Pausing) != phases.RoleDraining || g.Role(tabletest.WarmingUp) != phases.RoleWorking {
		t.Errorf("roles %q and %q, want their groups'", g.Role(tabletest.Pausing), g.Role(tabletest.WarmingUp))
	}
	if len(phases.Lifecycle().States)+2 != len(g.States) {
		t.Error("Grown changed the lifecycle table itself")
	}
}
