package diagrams_test

import (
	"fmt"

	"github.com/stargazer/lifecycle/diagrams"
	"github.com/stargazer/lifecycle/phases"
)

// Any table draws, not only phases.Lifecycle.
func ExampleMermaid() {
	door := phases.Table{
		Name:    "door",
		Initial: "closed",
		Groups:  []phases.GroupInfo{{Name: "usable", Doc: "the door works"}, {Name: "gone", Doc: "no door"}},
		States: []phases.StateInfo{
			{Name: "closed", Label: "1", Group: "usable"},
			{Name: "open", Label: "2", Group: "usable"},
			{Name: "broken", Group: "gone", Terminal: true},
		},
		Guards: []phases.GuardInfo{{Name: "forced", Doc: "someone kicked it"}},
		Transitions: []phases.Transition{
			{Event: "open", From: []phases.State{"closed"}, To: "open"},
			{Event: "close", From: []phases.State{"open"}, To: "closed"},
			{Event: "slam", From: []phases.State{"open"}, To: "closed", Guard: phases.Guard{Name: "forced", Not: true}},
			{Event: "slam", From: []phases.State{"open"}, To: "broken", Guard: phases.Guard{Name: "forced"}},
		},
	}
	fmt.Print(string(diagrams.Mermaid(&door, diagrams.Highlight("open"))))
	// Output:
	// ---
	// title: "door"
	// ---
	// stateDiagram-v2
	//     classDef current fill:#ffd54f,stroke:#e65100,stroke-width:3px,font-weight:bold
	//     state "usable" as g_usable {
	//         state "1 closed" as s_closed
	//         state "2 open" as s_open
	//     }
	//     state "gone" as g_gone {
	//         state "broken" as s_broken
	//     }
	//     [*] --> s_closed
	//     s_closed --> s_open : open
	//     s_open --> s_closed : close, slam [not forced]
	//     s_open --> s_broken : slam [forced]
	//     s_broken --> [*]
	//     class s_open current
}
