// The verdict: what the lifecycle state and the cached check results
// mean for liveness, readiness and the whole picture.

package health

import (
	"errors"
	"fmt"
	"time"
)

// verdict is everything the three endpoints decide from.
type verdict struct {
	snap   Snapshot
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
	v := verdict{snap: snap, requiredOK: true, worst: StatusPass,
		checks: make(map[string][]CheckResult, len(s.cfg.checks)+1)}

	lc := CheckResult{Status: StatusPass, ComponentType: "system", ObservedUnit: "s", Time: snap.Since}
	if !snap.Since.IsZero() {
		lc.ObservedValue = now.Sub(snap.Since).Seconds()
	}
	switch snap.State {
	case stateFailed:
		lc.Status, lc.Output = StatusFail, `state "failed": boot or run failed`
	case stateRunning, statePulling, stateDraining:
		// Working states: never wedged, however long they last.
		switch snap.State {
		case statePulling:
			lc.Status, lc.Output = StatusWarn, `state "pulling": a pull control op is in progress`
		case stateDraining:
			lc.Status, lc.Output = StatusWarn, `state "draining": out of rotation (readiness 503), still working`
		}
	default:
		in := now.Sub(snap.Since)
		if s.cfg.stuckAfter > 0 && snap.State != stateStopped && !snap.Since.IsZero() && in > s.cfg.stuckAfter {
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
			cr.Status, cr.Output = StatusWarn, r.err.Error()
			if required {
				cr.Status = StatusFail
				v.requiredOK = false
				v.requiredReason = fmt.Sprintf("required check %q failing: %v", c.name, r.err)
			}
		default:
			cr.Status, cr.Output = StatusPass, c.passOutput
		}
		v.checks[c.name] = []CheckResult{cr}
		v.worsen(cr.Status, c.name+": "+cr.Output)
	}
	return v
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
