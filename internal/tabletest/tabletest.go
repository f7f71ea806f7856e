// Package tabletest grows a copy of the lifecycle table the way
// docs/architecture.md says to add a state: a boot phase and a control
// state, each one row and its edges, and nothing else. The tests of every
// package that reads the table (the machine and the instance, health,
// systemd notifications, the diagrams, sgctl and its dashboard) run on it
// to show that they follow with no edit of their own.
package tabletest

import (
	"slices"

	"github.com/stargazer/lifecycle/phases"
)

// The states and events Grown adds.
const (
	// WarmingUp is a boot phase between building_adapters and starting:
	// phase 7, and starting becomes 8.
	WarmingUp phases.State = "warming_up"
	Warmed    phases.Event = "warmed"
	// Pausing is a control state: pause takes a running instance to it,
	// resume back.
	Pausing phases.State = "pausing"
	Pause   phases.Event = "pause"
	Resume  phases.Event = "resume"
)

// Grown returns a copy of phases.Lifecycle with WarmingUp and Pausing. The
// edits are the recipe's: the state rows (a label, a number, stop and fail
// come from their groups), the edge that led to starting now leads to
// warming_up, and each new state's own edges.
func Grown() *phases.Table {
	t := phases.Lifecycle()
	at := slices.IndexFunc(t.States, func(s phases.StateInfo) bool { return s.Name == phases.Starting })
	t.States = slices.Insert(t.States, at, phases.StateInfo{Name: WarmingUp, Group: phases.GroupBoot, Hook: "caches warmed", Doc: "the caches are filled"})
	at = slices.IndexFunc(t.States, func(s phases.StateInfo) bool { return s.Name == phases.Draining })
	t.States = slices.Insert(t.States, at+1, phases.StateInfo{Name: Pausing, Group: phases.GroupControl, Hook: "the pause handler", Doc: "taking no new work for a while"})
	for i, tr := range t.Transitions {
		if tr.Event == phases.AdaptersBuilt {
			t.Transitions[i].To = WarmingUp
		}
	}
	t.Transitions = append(t.Transitions,
		phases.Transition{Event: Warmed, From: []phases.State{WarmingUp}, To: phases.Starting},
		phases.Transition{Event: Pause, From: []phases.State{phases.Running}, To: Pausing},
		phases.Transition{Event: Resume, From: []phases.State{Pausing}, To: phases.Running},
	)
	return t
}
