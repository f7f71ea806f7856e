package dashboard

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/stargazer/lifecycle/cmd/sgctl/internal/optrack"
	"github.com/stargazer/lifecycle/cmd/sgctl/internal/rollout"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/registry"
)

// rollouts are the services with a rolling restart under way in this
// dashboard process: one at a time per service.
type rollouts struct {
	mu      sync.Mutex
	running map[string]time.Time // service -> when its rollout began
}

// begin claims service's rollout; false, with the start of the one under
// way, when there is one.
func (r *rollouts) begin(service string, now time.Time) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if at, busy := r.running[service]; busy {
		return at, false
	}
	if r.running == nil {
		r.running = map[string]time.Time{}
	}
	r.running[service] = now
	return now, true
}

func (r *rollouts) end(service string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, service)
}

// postRollout runs a rolling restart of plan's instances with package
// rollout, as `sgctl restart SERVICE` does: the dashboard sends each
// instance a signed restart op of its own and the next one only when an
// instance it restarted is back (its new process's done, signed with the
// dashboard's key, and the registry showing it running in a new process),
// at most req.MaxUnavailable in flight (0: all at once). The limit lives in
// this process, so nothing written to Redis lifts it. It streams, as NDJSON:
//
//	{"type":"rollout", "service", "instances", "max_unavailable", "until", "signed", "warnings", "trace_id"}
//	{"type":"sent", "instance", "op_id", "op", "target"}   one per instance, when its op is written
//	{"type":"result", ...} and {"type":"status", ...}       as postOp's
//	{"type":"back", "instance"}                           an instance is back
//	{"type":"summary", "ok", "done", "failed", "missing", "not_sent", "why", "seconds", "error"}
//
// One rollout per service at a time: a second request while one runs is a
// 409 that says since when. The rollout lives as long as the request: each
// instance has OpLimit to come back, and closing the page stops it as
// Ctrl-C stops sgctl (the ops already sent still run; no further one is
// sent).
func (s *Server) postRollout(w http.ResponseWriter, r *http.Request, req opRequest, plan *optrack.Plan, warnings []string) {
	since, ok := s.rollouts.begin(req.Service, s.cfg.Now())
	if !ok {
		http.Error(w, fmt.Sprintf("dashboard: a rolling restart of %q is already running (since %s)", req.Service, since.UTC().Format(time.RFC3339)), http.StatusConflict)
		return
	}
	defer s.rollouts.end(req.Service)
	signed := len(s.cfg.ControlKey) > 0
	ctx, traceID := optrack.Trace(r.Context())
	s.cfg.Logger.Info("dashboard: rolling restart", "service", req.Service, "instances", len(plan.Instances),
		"max_unavailable", req.MaxUnavailable, "trace_id", traceID.String(), "signed", signed)

	out := &ndjson{w: w, rc: http.NewResponseController(w)}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	out.emit(map[string]any{"type": "rollout", "service": req.Service, "instances": plan.Instances, "max_unavailable": req.MaxUnavailable,
		"until": plan.Spec.Until, "signed": signed, "warnings": warnings, "trace_id": traceID.String()})

	ro := &rollout.Rollout{Registry: s.reg, Client: s.client, MaxUnavailable: req.MaxUnavailable, Timeout: s.cfg.OpLimit, Every: opPoll,
		OnSent: func(instance string, o controlops.Op) {
			s.cfg.Logger.Info("dashboard: op sent", "service", req.Service, "op", o.Name, "target", o.Target, "op_id", o.ID, "signed", signed)
			out.emit(map[string]any{"type": "sent", "instance": instance, "op_id": o.ID, "op": o.Name, "target": o.Target})
		},
		OnResult: func(res controlops.Result) { out.emit(resultLine(res)) },
		OnStatus: func(e registry.Entry, fresh bool) {
			out.emit(map[string]any{"type": "status", "instance": e.Instance, "status": e.Status, "new_process": fresh})
		},
		OnBack: func(instance string) { out.emit(map[string]any{"type": "back", "instance": instance}) },
	}
	start := time.Now()
	res, err := ro.Run(ctx, plan)
	sum := map[string]any{"type": "summary", "ok": res.OK(), "done": res.Done, "failed": res.Failed, "missing": res.Missing,
		"not_sent": res.NotSent, "why": res.Why, "seconds": time.Since(start).Seconds()}
	if err != nil && ctx.Err() == nil {
		sum["error"] = err.Error()
	}
	out.emit(sum)
}

// resultLine is a result's NDJSON line. verified: signed with the
// dashboard's key; a done that is not, while the dashboard signs, was
// written by someone else and is not taken for one (controlops.Client.Wait).
func resultLine(res controlops.Result) map[string]any {
	m := map[string]any{"type": "result", "instance": res.Instance, "status": string(res.Status), "state": res.State, "pid": res.PID,
		"verified": res.Verified}
	if res.Reason != "" {
		m["reason"] = res.Reason
	}
	return m
}
