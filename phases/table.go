// Package phases holds state machines as data: states, events, named guards and
// transitions. Lifecycle is the boot-and-shutdown contract every Stargazer service
// follows; the machine, the docs, the diagrams and the tests all read it, so adding
// a state is one edit in this package.
//
// The package imports nothing of the project. A Table describes any machine; the
// root package runs one, and users may describe their own machines with the same
// types.
package phases

import (
	"fmt"
	"slices"
	"sort"
)

// State is a state name. Lifecycle state names are a contract: they appear as the
// registry status, in span attributes and in the diagrams.
type State string

// Event is the name of an event that moves a machine from one state to another.
type Event string

// Group clusters states for diagrams and docs.
type Group string

// StateInfo describes one state.
type StateInfo struct {
	Name State
	// Label is the phase label shown in diagrams and stored in the registry:
	// "1".."9" for boot phases, "S1".."S4" for shutdown steps, "" otherwise.
	Label string
	// Number is the boot phase number (1..9), or 0 when the state has none; it is
	// the lifecycle.phase span attribute.
	Number int
	Group  Group
	// Hook names the work the state runs, as a user reads it (e.g. "Service.OnStart").
	Hook string
	// Doc is one line on what happens in the state.
	Doc string
	// Terminal states have no way out.
	Terminal bool
}

// GuardInfo names a condition that chooses among transitions for one event.
type GuardInfo struct {
	Name string
	// Doc is one line saying when the guard holds.
	Doc string
}

// Guard is a reference to a named guard in a transition, possibly negated.
// The zero Guard means "unguarded".
type Guard struct {
	Name string
	Not  bool
}

// String renders the guard as it appears in diagrams and span attributes:
// "redis_required" or "not redis_required"; "" when unguarded.
func (g Guard) String() string {
	if g.Name == "" {
		return ""
	}
	if g.Not {
		return "not " + g.Name
	}
	return g.Name
}

// Transition is one edge of the table: Event moves the machine from any state in
// From to To, when Guard holds. Several transitions may share an event and a
// source state only when they are all guarded; the first whose guard holds wins.
type Transition struct {
	Event Event
	From  []State
	To    State
	Guard Guard
}

// Label renders the edge label used by diagrams: "event" or "event [guard]".
func (t Transition) Label() string {
	if g := t.Guard.String(); g != "" {
		return fmt.Sprintf("%s [%s]", t.Event, g)
	}
	return string(t.Event)
}

// Table is a whole machine as data.
type Table struct {
	// Name identifies the machine in diagrams and docs.
	Name    string
	Initial State
	// States in display order.
	States      []StateInfo
	Guards      []GuardInfo
	Transitions []Transition
	// Groups in display order, with a one-line description each.
	Groups []GroupInfo
}

// GroupInfo describes a group of states.
type GroupInfo struct {
	Name Group
	Doc  string
}

// Clone returns a deep copy of t: changing one changes nothing in the other.
func (t *Table) Clone() *Table {
	c := *t
	c.States = slices.Clone(t.States)
	c.Guards = slices.Clone(t.Guards)
	c.Groups = slices.Clone(t.Groups)
	c.Transitions = slices.Clone(t.Transitions)
	for i := range c.Transitions {
		c.Transitions[i].From = slices.Clone(t.Transitions[i].From)
	}
	return &c
}

// StatesIn returns the states of group g, in display order.
func (t *Table) StatesIn(g Group) []State {
	var out []State
	for _, s := range t.States {
		if s.Group == g {
			out = append(out, s.Name)
		}
	}
	return out
}

// State returns the description of s.
func (t *Table) State(s State) (StateInfo, bool) {
	for _, si := range t.States {
		if si.Name == s {
			return si, true
		}
	}
	return StateInfo{}, false
}

// Alternatives returns, in table order, the transitions that event may take from
// state from.
func (t *Table) Alternatives(event Event, from State) []Transition {
	var out []Transition
	for _, tr := range t.From(from) {
		if tr.Event == event {
			out = append(out, tr)
		}
	}
	return out
}

// From returns, in table order, every transition that leaves state s.
func (t *Table) From(s State) []Transition {
	var out []Transition
	for _, tr := range t.Transitions {
		for _, f := range tr.From {
			if f == s {
				out = append(out, tr)
				break
			}
		}
	}
	return out
}

// Events returns the table's distinct event names, sorted.
func (t *Table) Events() []Event {
	seen := map[Event]bool{}
	var out []Event
	for _, tr := range t.Transitions {
		if !seen[tr.Event] {
			seen[tr.Event] = true
			out = append(out, tr.Event)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// Validate reports the first inconsistency in the table: an unknown state or
// guard, an initial state that is not declared, a transition out of a terminal
// state, or two transitions for the same event and source state of which one is
// unguarded or whose guards are identical.
func (t *Table) Validate() error {
	states := map[State]StateInfo{}
	for _, s := range t.States {
		if s.Name == "" {
			return fmt.Errorf("phases: table %q: a state has no name", t.Name)
		}
		if _, dup := states[s.Name]; dup {
			return fmt.Errorf("phases: table %q: state %q declared twice", t.Name, s.Name)
		}
		states[s.Name] = s
	}
	if _, ok := states[t.Initial]; !ok {
		return fmt.Errorf("phases: table %q: initial state %q is not declared", t.Name, t.Initial)
	}
	guards := map[string]bool{}
	for _, g := range t.Guards {
		guards[g.Name] = true
	}
	groups := map[Group]bool{}
	for _, g := range t.Groups {
		groups[g.Name] = true
	}
	for _, s := range t.States {
		if len(t.Groups) > 0 && !groups[s.Group] {
			return fmt.Errorf("phases: table %q: state %q is in undeclared group %q", t.Name, s.Name, s.Group)
		}
	}
	type key struct {
		e Event
		s State
	}
	seen := map[key][]Guard{}
	for _, tr := range t.Transitions {
		if tr.Event == "" {
			return fmt.Errorf("phases: table %q: a transition to %q has no event", t.Name, tr.To)
		}
		if _, ok := states[tr.To]; !ok {
			return fmt.Errorf("phases: table %q: event %q goes to undeclared state %q", t.Name, tr.Event, tr.To)
		}
		if tr.Guard.Name != "" && !guards[tr.Guard.Name] {
			return fmt.Errorf("phases: table %q: event %q uses undeclared guard %q", t.Name, tr.Event, tr.Guard.Name)
		}
		if len(tr.From) == 0 {
			return fmt.Errorf("phases: table %q: event %q has no source state", t.Name, tr.Event)
		}
		for _, s := range tr.From {
			si, ok := states[s]
			if !ok {
				return fmt.Errorf("phases: table %q: event %q leaves undeclared state %q", t.Name, tr.Event, s)
			}
			if si.Terminal {
				return fmt.Errorf("phases: table %q: event %q leaves terminal state %q", t.Name, tr.Event, s)
			}
			k := key{tr.Event, s}
			for _, g := range seen[k] {
				if g.Name == "" || tr.Guard.Name == "" || g == tr.Guard {
					return fmt.Errorf("phases: table %q: event %q from %q is ambiguous: give every alternative a distinct guard", t.Name, tr.Event, s)
				}
			}
			seen[k] = append(seen[k], tr.Guard)
		}
	}
	return nil
}
