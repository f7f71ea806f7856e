// Package optrack plans a control op from the registry and follows it to
// its end: the one way sgctl's op commands and the dashboard decide which
// instances run an op, warn about those that will reject it, and wait for
// every instance's result and its arrival in the role the op leads to.
//
// # Plan, send, follow
//
// NewPlan takes the live registry entries of a service and returns a Plan:
// the instances the op addresses, those whose status accepts it (Spec.From,
// read from the lifecycle table's edges: restart from running or draining,
// pull and drain from running, undrain from draining), and Warnings, as
// data, about the others and about those whose control mode will reject it.
// The caller words the warnings, sends the op with controlops.Client.Send,
// and hands the sent op to Tracker.Follow.
//
// Follow reads the results stream with controlops.Client.Wait and, at the
// same time, the registry every Tracker.Every, reporting each planned
// instance's status changes. An instance is back once the registry shows it
// in a status whose role in the lifecycle table (phases.Table.Role) is
// Spec.Until: serving after a restart, a pull or an undrain, draining after
// a drain; a restart counts only in a new process (a new started_at or
// pid). It returns when every planned instance reported a final result and,
// if all were done, is back, or when its context ends; the Outcome names the
// instances that failed and those missing.
//
// What a status means is read from the table, never from a list of state
// names here: a state added to the table (a new control state, say) is
// planned and followed by its edges and its role with no edit to this
// package. A status the table does not have has no role: it never counts as
// back.
//
// # What is consistent when
//
// The plan is a snapshot: an instance that boots after it is not waited for
// (its daemon may not read the op), and one that leaves before the op
// reaches it is reported missing. The registry is polled, so a status held
// for less than Tracker.Every may not be reported; the results stream is
// read in full from the op's stream position, so no result is missed.
//
// # Outages
//
// A registry read that fails is retried at the next tick. A Redis error in
// Wait ends Follow at once with that error; the context's end ends it with
// the error Wait wraps around ctx.Err(). Either way the Outcome says what
// was known.
package optrack

import (
	"errors"
	"fmt"
	"slices"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// Spec says which instances run an op, by their registry status, and when
// the op is over for an instance.
type Spec struct {
	// From are the statuses in which an instance runs the op: the sources
	// of the op's event in the lifecycle table, in the table's order.
	From []string
	// Until is the role (phases.RoleServing, phases.RoleDraining) of the
	// status an instance is in once the op is done for it.
	Until phases.Role
	// Fresh: Until counts only when a new process reached it (a restart).
	Fresh bool
}

// Accepts reports whether an instance in status runs the op.
func (s Spec) Accepts(status string) bool { return slices.Contains(s.From, status) }

// ends is the role each op leads to; the statuses it starts from are the
// lifecycle table's.
var ends = []struct {
	op    string
	until phases.Role
	fresh bool
}{
	{controlops.OpRestart, phases.RoleServing, true},
	{controlops.OpPull, phases.RoleServing, false},
	{controlops.OpDrain, phases.RoleDraining, false},
	{controlops.OpUndrain, phases.RoleServing, false},
}

// specsOf returns the Spec of each op in table: From read off the table's
// edges for the op's event, in the order of the table's states.
func specsOf(table *phases.Table) map[string]Spec {
	m := map[string]Spec{}
	for _, e := range ends {
		s := Spec{Until: e.until, Fresh: e.fresh}
		for _, st := range table.States {
			if len(table.Alternatives(phases.Event(e.op), st.Name)) > 0 {
				s.From = append(s.From, string(st.Name))
			}
		}
		m[e.op] = s
	}
	return m
}

// lifecycle is the table every service runs, which NewPlan plans by; specs
// are its Specs. Neither is changed after init.
var (
	lifecycle = phases.Lifecycle()
	specs     = specsOf(lifecycle)
)

// Ops returns the ops that have a Spec: restart, pull, drain, undrain.
func Ops() []string {
	out := make([]string, len(ends))
	for i, e := range ends {
		out[i] = e.op
	}
	return out
}

// SpecOf returns the Spec of op in the lifecycle table, and false when op
// is not one of Ops.
func SpecOf(op string) (Spec, bool) { return specIn(specs, op) }

func specIn(m map[string]Spec, op string) (Spec, bool) {
	s, ok := m[op]
	s.From = slices.Clone(s.From)
	return s, ok
}

// ErrUnknownOp is returned by NewPlan for an op that is not one of Ops.
var ErrUnknownOp = errors.New("optrack: unknown op")

// Reason is why a Warning names an instance.
type Reason int

// Reasons.
const (
	// WrongStatus: the instance's status is not in Spec.From; it does not
	// run the op and is not waited for.
	WrongStatus Reason = iota + 1
	// ControlDisabled: the instance runs no control ops (no key, no
	// insecure opt-in); it will reject the op.
	ControlDisabled
	// SignedOnly: the instance accepts signed ops only and the sender has
	// no key; it will reject the op.
	SignedOnly
	// UnsignedResults: the instance is in insecure mode (no key) and the
	// sender has one. It runs the op, but its results are unsigned, and a
	// sender with a key takes a done only when signed with it
	// (controlops.Client.Wait): a wait for it ends only at its timeout.
	UnsignedResults
)

// Warning names an addressed instance that will not run the op, and why.
type Warning struct {
	Reason Reason
	Entry  registry.Entry
}

// Plan is which instances an op is sent to and which of them run it.
type Plan struct {
	Op, Service string
	// Target is the op's target: controlops.TargetAll, or the one instance
	// asked for.
	Target string
	Spec   Spec
	// Addressed are the live entries the op addresses, in registry order;
	// empty when the service has none (or the instance asked for is not
	// among them).
	Addressed []registry.Entry
	// Instances are the ids of the addressed instances whose status accepts
	// the op: those Follow waits for.
	Instances []string
	// Warnings name, in registry order, the addressed instances that will
	// not run the op: at most one per instance.
	Warnings []Warning

	before map[string]registry.Entry // instance -> entry when planned
	table  *phases.Table             // what each status means (its role); the lifecycle's
}

// role returns the role of status in the table the plan was made by (the
// lifecycle's): "" for a status the table does not have.
func (p *Plan) role(status string) phases.Role { return p.table.Role(phases.State(status)) }

// back reports whether an instance whose entry is now e is where the op
// leads: its status has the role Spec.Until, in a new process (fresh) when
// Spec.Fresh.
func (p *Plan) back(e registry.Entry, fresh bool) bool {
	return p.Spec.Until != "" && p.role(e.Status) == p.Spec.Until && (fresh || !p.Spec.Fresh)
}

// NewPlan plans op for service from its live entries (registry.Instances).
// instance addresses one instance ("" addresses all); signed says whether
// the sender signs the op (has a key). It returns ErrUnknownOp for an op
// that is not one of Ops. A plan with no Instances is not an error: the
// caller decides whether sending it is.
func NewPlan(op, service, instance string, live []registry.Entry, signed bool) (*Plan, error) {
	return newPlan(lifecycle, specs, op, service, instance, live, signed)
}

// newPlan is NewPlan by table, whose Specs are specs (specsOf(table)).
func newPlan(table *phases.Table, specs map[string]Spec, op, service, instance string, live []registry.Entry, signed bool) (*Plan, error) {
	spec, ok := specIn(specs, op)
	if !ok {
		return nil, fmt.Errorf("%w %q: want one of %v", ErrUnknownOp, op, Ops())
	}
	p := &Plan{Op: op, Service: service, Target: controlops.TargetAll, Spec: spec, before: map[string]registry.Entry{}, table: table}
	if instance != "" {
		p.Target = instance
	}
	for _, e := range live {
		if instance != "" && e.Instance != instance {
			continue
		}
		p.Addressed = append(p.Addressed, e)
		if !spec.Accepts(e.Status) {
			p.Warnings = append(p.Warnings, Warning{WrongStatus, e})
			continue
		}
		p.before[e.Instance] = e
		p.Instances = append(p.Instances, e.Instance)
		switch {
		case e.Control == string(controlops.ModeDisabled):
			p.Warnings = append(p.Warnings, Warning{ControlDisabled, e})
		case e.Control == string(controlops.ModeSigned) && !signed:
			p.Warnings = append(p.Warnings, Warning{SignedOnly, e})
		case e.Control == string(controlops.ModeInsecure) && signed:
			p.Warnings = append(p.Warnings, Warning{UnsignedResults, e})
		}
	}
	return p, nil
}

// Runs reports whether the plan waits for instance: it was addressed and
// its status accepted the op.
func (p *Plan) Runs(instance string) bool {
	_, ok := p.before[instance]
	return ok
}
