package phases

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
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
	// Label is the phase label shown in diagrams and stored in the registry
	// ("3", "S1"), "" when the state has none. In a numbered group
	// (GroupInfo.Numbered) the table derives it from the state's place:
	// Table.State and Table.AllStates fill it in, and the row leaves it empty.
	Label string
	// Number is the phase number, the lifecycle.phase span attribute, or 0
	// when the state has none. A numbered group without a prefix derives it
	// as it derives Label.
	Number int
	Group  Group
	// Role is what being in the state means to whoever watches the machine
	// from outside; empty, the group's Role (see Table.Role).
	Role Role
	// Hook names the work the state runs, as a user reads it (e.g. "Service.OnStart").
	Hook string
	// Doc is one line on what happens in the state.
	Doc string
	// Terminal states have no way out.
	Terminal bool
}

// Role is what being in a state means to those who watch an instance from
// outside: its readiness and liveness probes, systemd, the control channel
// and the clients that route to it. Health, control ops and systemd
// notifications read it from the table, so a new state needs no second list.
type Role string

// Roles.
const (
	// RoleWorking: on the way to another state, as a boot phase or a
	// shutdown step. Not ready; alive, unless it lasts past the limit after
	// which an instance counts as wedged.
	RoleWorking Role = "working"
	// RoleServing: doing its work and in rotation (running). Ready; control
	// ops run.
	RoleServing Role = "serving"
	// RoleDraining: alive and doing its work, out of rotation, however long
	// it lasts (pulling, draining). Not ready, never wedged; a restart or a
	// stop may begin.
	RoleDraining Role = "draining"
	// RoleStopped: over, cleanly. The process exits 0.
	RoleStopped Role = "stopped"
	// RoleFailed: over, because something failed. Liveness fails; the
	// process exits 1.
	RoleFailed Role = "failed"
)

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
	// FromGroups adds to From every state of these groups that no other
	// edge of the same event leaves: a stop that any boot phase takes, say,
	// takes a phase added to the group later without a second edit.
	// Table.Edges resolves it.
	FromGroups []Group
	To         State
	Guard      Guard
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
	// Role is what its states mean to the outside, unless a state's row
	// says otherwise.
	Role Role
	// Numbered gives the group's states, in table order, the labels
	// Prefix+"1", Prefix+"2", ...: a state added to the group renumbers the
	// ones after it. Without a Prefix the number is also the state's Number.
	Numbered bool
	Prefix   string
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
		c.Transitions[i].FromGroups = slices.Clone(t.Transitions[i].FromGroups)
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

// State returns the description of s, with the label and number its group
// gives it (GroupInfo.Numbered).
func (t *Table) State(s State) (StateInfo, bool) {
	for i := range t.States {
		if t.States[i].Name == s {
			return t.describe(i), true
		}
	}
	return StateInfo{}, false
}

// AllStates returns every state in display order, each as State describes it.
func (t *Table) AllStates() []StateInfo {
	out := make([]StateInfo, len(t.States))
	for i := range t.States {
		out[i] = t.describe(i)
	}
	return out
}

// describe returns the row of States[i] with what its group derives: the
// label and number of a numbered group, and the role.
func (t *Table) describe(i int) StateInfo {
	si := t.States[i]
	g, ok := t.group(si.Group)
	if !ok {
		return si
	}
	if si.Role == "" {
		si.Role = g.Role
	}
	if g.Numbered {
		n := 0
		for _, o := range t.States[:i+1] {
			if o.Group == si.Group {
				n++
			}
		}
		si.Label = g.Prefix + strconv.Itoa(n)
		if g.Prefix == "" {
			si.Number = n
		}
	}
	return si
}

func (t *Table) group(g Group) (GroupInfo, bool) {
	for _, gi := range t.Groups {
		if gi.Name == g {
			return gi, true
		}
	}
	return GroupInfo{}, false
}

// Role returns the role of state s: its row's, else its group's; "" when
// the table gives it none.
func (t *Table) Role(s State) Role {
	si, _ := t.State(s)
	return si.Role
}

// Edges returns the table's transitions, in table order, each with its
// sources resolved: From, and the states of its FromGroups that no other
// edge of the same event leaves. Everything that reads the edges (the
// machine, the diagrams, the docs) reads them here.
func (t *Table) Edges() []Transition {
	out := make([]Transition, len(t.Transitions))
	for i, tr := range t.Transitions {
		tr.From = slices.Clone(tr.From)
		for _, g := range tr.FromGroups {
			for _, s := range t.StatesIn(g) {
				if !slices.Contains(tr.From, s) && !t.leftBy(tr.Event, s, i) {
					tr.From = append(tr.From, s)
				}
			}
		}
		tr.FromGroups = nil
		out[i] = tr
	}
	return out
}

// leftBy reports whether an edge of event other than Transitions[except]
// names state s in its From.
func (t *Table) leftBy(event Event, s State, except int) bool {
	for i, tr := range t.Transitions {
		if i != except && tr.Event == event && slices.Contains(tr.From, s) {
			return true
		}
	}
	return false
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
	for _, tr := range t.Edges() {
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
		if g, _ := t.group(s.Group); g.Numbered && (s.Label != "" || s.Number != 0) {
			return fmt.Errorf("phases: table %q: state %q sets its label or number, but its group %q numbers its states", t.Name, s.Name, s.Group)
		}
		si, _ := t.State(s.Name)
		switch si.Role {
		case "", RoleWorking, RoleServing, RoleDraining:
			if si.Terminal && si.Role != "" {
				return fmt.Errorf("phases: table %q: terminal state %q has role %q, want %q or %q", t.Name, s.Name, si.Role, RoleStopped, RoleFailed)
			}
		case RoleStopped, RoleFailed:
			if !si.Terminal {
				return fmt.Errorf("phases: table %q: state %q has role %q but is not terminal", t.Name, s.Name, si.Role)
			}
		default:
			return fmt.Errorf("phases: table %q: state %q has unknown role %q", t.Name, s.Name, si.Role)
		}
	}
	type key struct {
		e Event
		s State
	}
	seen := map[key][]Guard{}
	for _, g := range t.Transitions {
		for _, fg := range g.FromGroups {
			if !groups[fg] {
				return fmt.Errorf("phases: table %q: event %q leaves undeclared group %q", t.Name, g.Event, fg)
			}
		}
	}
	for _, tr := range t.Edges() {
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
