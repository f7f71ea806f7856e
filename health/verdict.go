// The verdict: what the lifecycle state and the cached check results
// mean for liveness, readiness and the whole picture.

package health

import (
	"errors"
	"fmt"
	"time"

	"github.com/stargazer/lifecycle/phases"
)

// verdict is everything the three endpoints decide from.
type verdict struct {
	snap Snapshot
	// role is the snapshot's role, RoleWorking when it has none.
	role   phases.Role
	checks map[string][]CheckResult
	// lifecycle is the "lifecycle:state" check; wedged is set by it.
	lifecycle CheckResult
	wedged    bool
	// requiredOK: every required check has run and passes; requiredReason
	// says why not.
	requiredOK     bool
	requiredReason string
	// worst is the worst status among all checks, lifecycle included, and
	// reason the output of the check that set it.
	worst  string
	reason string
}

func (s *Server) evaluate() verdict {
	snap := s.src.Snapshot()
	now := s.cfg.clock.Now()
	v := verdict{snap: snap, role: roleOf(snap), requiredOK: true, worst: StatusPass,
		checks: make(map[string][]CheckResult, len(s.cfg.checks)+1)}

	lc := CheckResult{Status: StatusPass, ComponentType: "system", ObservedUnit: "s", Time: snap.Since}
	if !snap.Since.IsZero() {
		lc.ObservedValue = now.Sub(snap.Since).Seconds()
	}
	// What the state means comes from its role in the machine's table, not
	// from its name: a state added to the table needs no edit here.
	switch v.role {
	case phases.RoleFailed:
		lc.Status, lc.Output = StatusFail, fmt.Sprintf("state %q: boot or run failed", snap.State)
	case phases.RoleServing:
		// Never wedged, however long it lasts.
	case phases.RoleDraining:
		// Out of rotation and still working (an operator may keep an
		// instance drained for days): never wedged.
		doc := snap.Doc
		if doc == "" {
			doc = "out of rotation, still working"
		}
		lc.Status, lc.Output = StatusWarn, fmt.Sprintf("state %q: %s", snap.State, doc)
	case phases.RoleStopped:
		lc.Status, lc.Output = StatusWarn, fmt.Sprintf("state %q is not running", snap.State)
	default: // RoleWorking: on the way to another state, wedged if it never gets there
		in := now.Sub(snap.Since)
		if s.cfg.stuckAfter > 0 && !snap.Since.IsZero() && in > s.cfg.stuckAfter {
			v.wedged = true
			lc.Status = StatusFail
			lc.Output = fmt.Sprintf("wedged: state %q unchanged for %v (limit %v)", snap.State, in.Round(time.Second), s.cfg.stuckAfter)
		} else {
			lc.Status, lc.Output = StatusWarn, fmt.Sprintf("state %q is not running", snap.State)
		}
	}
	if lc.Status == StatusPass && snap.ShuttingDown {
		lc.Status, lc.Output = StatusWarn, "shutting down"
	}
	if lc.Status == StatusPass && snap.Degraded {
		lc.Status, lc.Output = StatusWarn, "degraded: booted without Redis"
	}
	v.lifecycle = lc
	v.checks[LifecycleCheck] = []CheckResult{lc}
	v.worsen(lc.Status, lc.Output)

	for _, c := range s.cfg.checks {
		c.mu.Lock()
		r := c.last
		c.mu.Unlock()
		required := c.required || (c.redis && snap.RedisRequired)
		cr := CheckResult{ComponentType: c.componentType, ObservedUnit: "ms", Time: r.at,
			ObservedValue: float64(r.duration.Microseconds()) / 1000}
		switch {
		case !r.done:
			cr.Status, cr.Output = StatusWarn, "not checked yet"
			if required {
				v.requiredOK = false
				v.requiredReason = fmt.Sprintf("required check %q has not run yet", c.name)
			}
		case r.err != nil:
			out := r.err.Error()
			if !s.cfg.showAddrs {
				out = hideAddrs(out)
			}
			cr.Status, cr.Output = StatusWarn, out
			if required {
				cr.Status = StatusFail
				v.requiredOK = false
				v.requiredReason = fmt.Sprintf("required check %q failing: %s", c.name, out)
			}
		default:
			cr.Status, cr.Output = StatusPass, c.passOutput
		}
		v.checks[c.name] = []CheckResult{cr}
		v.worsen(cr.Status, c.name+": "+cr.Output)
	}
	return v
}

// roleOf returns the role of the snapshot's state: RoleWorking when it
// names none, or one this package does not know.
func roleOf(snap Snapshot) phases.Role {
	switch snap.Role {
	case phases.RoleServing, phases.RoleDraining, phases.RoleStopped, phases.RoleFailed:
		return snap.Role
	}
	return phases.RoleWorking
}

func (v *verdict) worsen(status, reason string) {
	if rank(status) > rank(v.worst) {
		v.worst, v.reason = status, reason
	}
}

func rank(status string) int {
	switch status {
	case StatusFail:
		return 2
	case StatusWarn:
		return 1
	}
	return 0
}

// Alive returns nil when /livez answers 200, and otherwise an error saying
// why: the instance failed, or is wedged. It is what a watchdog asks (see
// the lifecycle's systemd notifications).
func (s *Server) Alive() error {
	if v := s.evaluate(); v.lifecycle.Status == StatusFail {
		return errors.New(v.lifecycle.Output)
	}
	return nil
}
