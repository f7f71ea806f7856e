package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/stargazer/lifecycle/cmd/sgctl/internal/optrack"
	"github.com/stargazer/lifecycle/cmd/sgctl/internal/visible"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/registry"
)

// opRequest is the body of POST /api/op: an op for one instance (a row's
// or the instance page's buttons), or a rolling restart of a service (its
// form), the one op the dashboard sends to every instance of a service.
type opRequest struct {
	// Service is the page's service (the one in its URL, or the section's
	// on the fleet page), never a name read from an entry's JSON.
	Service string `json:"service"`
	// Instance is the one instance addressed: required, and an instance id
	// (fleetenv.ValidateInstance), unless Rolling.
	Instance string `json:"instance"`
	Op       string `json:"op"` // restart, pull, drain or undrain
	// Rolling asks for a restart of every instance of Service: only with
	// op restart and without Instance.
	Rolling        bool `json:"rolling"`
	MaxUnavailable int  `json:"max_unavailable"`
}

// opPoll is how often an op's progress reads the registry to see the
// instances change status and come back.
const opPoll = 150 * time.Millisecond

// postOp sends one op through the signed controlops client and follows it
// as sgctl's op commands do with --wait (both plan and follow it with
// package optrack), streaming its progress as NDJSON, one object per line
// as it happens:
//
//	{"type":"sent", "op_id", "op", "target", "instances", "until", "signed", "warnings"}
//	{"type":"result", "instance", "status", "state", "pid", "reason"}
//	{"type":"status", "instance", "status", "new_process"}
//	{"type":"summary", "ok", "failed", "missing", "seconds", "error"}
//
// instances are those whose status accepts the op (restart: running or
// draining; pull and drain: running; undrain: draining), until the role
// (serving, draining) of the status each is in once it is done; a
// summary's error is Redis failing while
// the op was followed. The op runs in the fleet whatever happens
// to the request: closing it only stops the reporting.
//
// The op addresses the request's instance of the request's service, both
// checked as names (validOp): a request without a valid instance is a 400
// naming the field, never an op for every instance; only a rolling restart
// ("rolling": true, the service page's form) addresses a whole service,
// and the dashboard runs it itself (postRollout): one signed op per
// instance, max_unavailable at a time. max_unavailable means nothing to
// an op for one instance, which is sent without args.
// The instances it is planned for come from the registry's listing, whose
// names are the keys' (package registry).
func (s *Server) postOp(w http.ResponseWriter, r *http.Request) {
	if s.cfg.ReadOnly {
		http.Error(w, "dashboard: read-only (--read-only): actions are off", http.StatusForbidden)
		return
	}
	// A JSON body needs a CORS preflight from another origin: one more wall
	// beside the same-origin check.
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		http.Error(w, "dashboard: want Content-Type: application/json", http.StatusUnsupportedMediaType)
		return
	}
	var req opRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "dashboard: reading the op: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := validOp(req); err != nil {
		http.Error(w, "dashboard: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.OpLimit)
	defer cancel()

	live, err := s.reg.Instances(ctx, req.Service)
	if err != nil {
		s.redisFailed(w, err)
		return
	}
	signed := len(s.cfg.ControlKey) > 0
	plan, err := optrack.NewPlan(req.Op, req.Service, req.Instance, live, signed)
	if err != nil { // validOp let through an op without a Spec
		http.Error(w, "dashboard: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !req.Rolling && plan.Target != req.Instance { // validOp's promise, kept where the op is sent
		http.Error(w, fmt.Sprintf("dashboard: instance %q: an op for one instance planned for %q", req.Instance, plan.Target), http.StatusBadRequest)
		return
	}
	if len(plan.Addressed) == 0 {
		http.Error(w, fmt.Sprintf("dashboard: no live instance of %q to send %s to", req.Service, req.Op), http.StatusConflict)
		return
	}
	from := strings.Join(plan.Spec.From, " or ")
	var warnings []string
	for _, wn := range plan.Warnings {
		id := visible.Clean(wn.Entry.Instance)
		switch wn.Reason {
		case optrack.WrongStatus:
			warnings = append(warnings, fmt.Sprintf("%s is %s, not %s: it will not run the op", id, visible.Cell(wn.Entry.Status), from))
		case optrack.ControlDisabled:
			warnings = append(warnings, id+" has control ops disabled (no SG_CONTROL_KEY): it will reject the op")
		case optrack.UnsignedResults:
			warnings = append(warnings, id+" is in insecure mode: its results are unsigned, so the dashboard cannot tell its done from a forged one and waits until its time limit")
		case optrack.SignedOnly:
			warnings = append(warnings, id+" accepts signed ops only, and the dashboard has no SG_CONTROL_KEY: it will reject the op")
		}
	}
	if len(plan.Instances) == 0 {
		http.Error(w, fmt.Sprintf("dashboard: no instance of %q is %s: nothing would run the op", req.Service, from), http.StatusConflict)
		return
	}
	if why := s.denied(ctx, []string{req.Service})[req.Service]; why != "" {
		http.Error(w, "dashboard: "+why, http.StatusForbidden)
		return
	}

	if req.Rolling {
		cancel() // a rollout gives each instance OpLimit (postRollout)
		s.postRollout(w, r, req, plan, warnings)
		return
	}
	sent, err := s.client.Send(ctx, req.Service, req.Op, plan.Target, nil)
	if errors.Is(err, controlops.ErrNoPermission) {
		http.Error(w, "dashboard: "+s.refused(req.Service, err), http.StatusForbidden)
		return
	}
	if err != nil {
		s.redisFailed(w, err)
		return
	}
	s.cfg.Logger.Info("dashboard: op sent", "service", req.Service, "op", req.Op, "target", plan.Target, "op_id", sent.ID, "signed", signed)

	out := &ndjson{w: w, rc: http.NewResponseController(w)}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	out.emit(map[string]any{"type": "sent", "op_id": sent.ID, "op": req.Op, "service": req.Service, "target": plan.Target,
		"instances": plan.Instances, "until": plan.Spec.Until, "signed": signed, "warnings": warnings})

	start := time.Now()
	tr := &optrack.Tracker{Registry: s.reg, Client: s.client, Every: opPoll,
		OnResult: func(res controlops.Result) { out.emit(resultLine(res)) },
		OnStatus: func(e registry.Entry, fresh bool) {
			out.emit(map[string]any{"type": "status", "instance": e.Instance, "status": e.Status, "new_process": fresh})
		},
	}
	res, err := tr.Follow(ctx, plan, sent)
	sum := map[string]any{"type": "summary", "ok": res.OK(), "failed": res.Failed,
		"missing": res.Missing, "seconds": time.Since(start).Seconds()}
	if err != nil && ctx.Err() == nil {
		sum["error"] = err.Error()
	}
	out.emit(sum)
}

// validOp checks a request before anything is read or sent. Each error
// names the field. An instance missing or not an id is an error, never
// every instance: a whole service is addressed only by a rolling restart.
func validOp(req opRequest) error {
	if _, ok := optrack.SpecOf(req.Op); !ok {
		return fmt.Errorf("op %q: want restart, pull, drain or undrain", visible.Cell(req.Op))
	}
	if err := fleetenv.ValidateService(req.Service); err != nil {
		return fmt.Errorf("service %q: %w: %v", visible.Cell(req.Service), registry.ErrInvalidName, err)
	}
	if req.MaxUnavailable < 0 || req.MaxUnavailable > 0 && req.Op != controlops.OpRestart {
		return fmt.Errorf("max_unavailable %d: want 0 (no limit) or more, and only for restart", req.MaxUnavailable)
	}
	if req.Rolling {
		if req.Op != controlops.OpRestart || req.Instance != "" {
			return fmt.Errorf("rolling: only a restart of every instance is rolling: want op restart and no instance (got op %q, instance %q)",
				visible.Cell(req.Op), visible.Cell(req.Instance))
		}
		return nil
	}
	if req.Instance == "" {
		return fmt.Errorf(`instance: missing: each %s from the dashboard names one instance (a rolling restart of the whole service says "rolling": true)`, req.Op)
	}
	if err := fleetenv.ValidateInstance(req.Instance); err != nil {
		return fmt.Errorf("instance %q: %w: %v", visible.Cell(req.Instance), registry.ErrInvalidName, err)
	}
	return nil
}

// ndjson writes one JSON object per line and flushes it, from the
// handler and the tracker's callbacks.
type ndjson struct {
	mu sync.Mutex
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (n *ndjson) emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	_, _ = n.w.Write(append(visible.JSON(b), '\n'))
	_ = n.rc.Flush()
}
