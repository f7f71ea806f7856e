package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// opRequest is the body of POST /api/op.
type opRequest struct {
	Service string `json:"service"`
	// Instance addresses one instance; "" addresses every instance.
	Instance       string `json:"instance"`
	Op             string `json:"op"` // restart or pull
	MaxUnavailable int    `json:"max_unavailable"`
}

// opPoll is how often an op's progress reads the registry to see the
// instances leave and return to running.
const opPoll = 150 * time.Millisecond

// postOp sends one op through the signed controlops client, as sgctl
// restart and pull --wait do, and streams its progress as NDJSON, one
// object per line as it happens:
//
//	{"type":"sent", "op_id", "op", "target", "instances", "signed", "warnings"}
//	{"type":"result", "instance", "status", "state", "pid", "reason"}
//	{"type":"status", "instance", "status", "new_process"}
//	{"type":"summary", "ok", "failed", "missing", "seconds"}
//	{"type":"error", "error"}
//
// The op runs in the fleet whatever happens to the request: closing it
// only stops the reporting.
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
	target := controlops.TargetAll
	if req.Instance != "" {
		target = req.Instance
		live = slices.DeleteFunc(live, func(e registry.Entry) bool { return e.Instance != req.Instance })
	}
	if len(live) == 0 {
		http.Error(w, fmt.Sprintf("dashboard: no live instance of %q to send %s to", req.Service, req.Op), http.StatusConflict)
		return
	}
	signed := len(s.cfg.ControlKey) > 0
	before := map[string]registry.Entry{}
	var waitFor, warnings []string
	for _, e := range live {
		id := clean(e.Instance)
		switch {
		case e.Status != string(phases.Running):
			warnings = append(warnings, fmt.Sprintf("%s is %s, not running: it will not run the op", id, clean(e.Status)))
			continue
		case e.Control == string(controlops.ModeDisabled):
			warnings = append(warnings, id+" has control ops disabled (no SG_CONTROL_KEY): it will reject the op")
		case e.Control == string(controlops.ModeSigned) && !signed:
			warnings = append(warnings, id+" accepts signed ops only, and the dashboard has no SG_CONTROL_KEY: it will reject the op")
		}
		before[e.Instance] = e
		waitFor = append(waitFor, e.Instance)
	}
	if len(waitFor) == 0 {
		http.Error(w, fmt.Sprintf("dashboard: no instance of %q is running: nothing would run the op", req.Service), http.StatusConflict)
		return
	}

	var args any
	if req.Op == controlops.OpRestart && req.MaxUnavailable > 0 {
		args = controlops.RestartArgs{MaxUnavailable: req.MaxUnavailable}
	}
	sent, err := s.client.Send(ctx, req.Service, req.Op, target, args)
	if err != nil {
		s.redisFailed(w, err)
		return
	}
	s.cfg.Logger.Info("dashboard: op sent", "service", req.Service, "op", req.Op, "target", target, "op_id", sent.ID, "signed", signed)

	out := &ndjson{w: w, rc: http.NewResponseController(w)}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	out.emit(map[string]any{"type": "sent", "op_id": sent.ID, "op": req.Op, "service": req.Service, "target": target,
		"instances": waitFor, "signed": signed, "warnings": warnings})

	start := time.Now()
	tr := &opTracker{op: req.Op, before: before, out: out, s: s, service: req.Service}
	pollCtx, stopPoll := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); tr.poll(pollCtx) }()
	defer func() { stopPoll(); wg.Wait() }()

	final, err := s.client.Wait(ctx, req.Service, sent, waitFor, func(res controlops.Result) {
		if _, ok := before[res.Instance]; ok {
			m := map[string]any{"type": "result", "instance": res.Instance, "status": string(res.Status), "state": res.State, "pid": res.PID}
			if res.Reason != "" {
				m["reason"] = res.Reason
			}
			out.emit(m)
		}
	})
	var failed []string
	for _, in := range waitFor {
		if res, ok := final[in]; ok && res.Status != controlops.StatusDone {
			failed = append(failed, in)
		}
	}
	if err == nil && len(failed) == 0 {
		tr.awaitBack(ctx, waitFor)
	}
	stopPoll()
	wg.Wait()
	var missing []string
	for _, in := range waitFor {
		if res, ok := final[in]; !ok || res.Status == controlops.StatusDone && !tr.isBack(in) {
			missing = append(missing, in)
		}
	}
	sum := map[string]any{"type": "summary", "ok": len(failed) == 0 && len(missing) == 0, "failed": failed,
		"missing": missing, "seconds": time.Since(start).Seconds()}
	if err != nil && ctx.Err() == nil {
		sum["error"] = err.Error()
	}
	out.emit(sum)
}

func validOp(req opRequest) error {
	if req.Op != controlops.OpRestart && req.Op != controlops.OpPull {
		return fmt.Errorf("op %q: want restart or pull", req.Op)
	}
	if err := registry.ValidateNames(req.Service, "x"); err != nil {
		return err
	}
	if req.Instance != "" {
		if err := registry.ValidateNames(req.Service, req.Instance); err != nil {
			return err
		}
	}
	if req.MaxUnavailable < 0 || req.MaxUnavailable > 0 && req.Op != controlops.OpRestart {
		return fmt.Errorf("max_unavailable %d: want 0 (no limit) or more, and only for restart", req.MaxUnavailable)
	}
	return nil
}

// ndjson writes one JSON object per line and flushes it, from the Wait
// callback and the poller at once.
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
	_, _ = n.w.Write(append(b, '\n'))
	_ = n.rc.Flush()
}

// opTracker follows the addressed instances in the registry while an op
// runs: each status change is reported, and an instance is back once it
// runs again (after a restart: a new process, a new started_at).
type opTracker struct {
	op, service string
	s           *Server
	out         *ndjson
	before      map[string]registry.Entry

	mu   sync.Mutex
	last map[string]string
	back map[string]bool
}

func (t *opTracker) poll(ctx context.Context) {
	tick := time.NewTicker(opPoll)
	defer tick.Stop()
	for {
		t.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (t *opTracker) check(ctx context.Context) {
	entries, err := t.s.reg.Instances(ctx, t.service)
	if err != nil {
		return // the next tick retries; Wait reports a Redis that is gone
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.last == nil {
		t.last, t.back = map[string]string{}, map[string]bool{}
		for in, e := range t.before {
			t.last[in] = e.Status
		}
	}
	for _, e := range entries {
		old, ok := t.before[e.Instance]
		if !ok {
			continue
		}
		fresh := !e.StartedAt.Equal(old.StartedAt) || e.PID != old.PID
		key := e.Status
		if fresh {
			key += "/new"
		}
		if t.last[e.Instance] != key {
			t.last[e.Instance] = key
			t.out.emit(map[string]any{"type": "status", "instance": e.Instance, "status": e.Status, "new_process": fresh})
		}
		if e.Status == string(phases.Running) && (fresh || t.op != controlops.OpRestart) {
			t.back[e.Instance] = true
		}
	}
}

func (t *opTracker) awaitBack(ctx context.Context, ids []string) {
	tick := time.NewTicker(opPoll / 2)
	defer tick.Stop()
	for {
		t.check(ctx)
		done := true
		for _, in := range ids {
			done = done && t.isBack(in)
		}
		if done {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (t *opTracker) isBack(in string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.back[in]
}
