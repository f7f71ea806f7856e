package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/cmd/sgctl/internal/optrack"
	"github.com/stargazer/lifecycle/cmd/sgctl/internal/rollout"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/registry"
)

// rollout restarts the instances of plan (a restart of a whole service)
// with package rollout, printing its progress, and returns the exit code.
func (a *app) rollout(ctx context.Context, cn *conn, reg *registry.Registry, plan *optrack.Plan, f *opFlags, out *opPrinter) int {
	ctx, traceID := optrack.Trace(ctx)
	out.rollout(plan.Service, plan.Instances, f.maxUnavailable, f.timeout, traceID)
	ro := &rollout.Rollout{
		Registry: reg, Client: controlops.NewClient(cn.client, cn.controlKey),
		MaxUnavailable: f.maxUnavailable, Timeout: f.timeout, Every: opPoll,
		OnSent: out.sentTo, OnResult: out.result, OnStatus: out.status,
	}
	start := time.Now()
	res, err := ro.Run(ctx, plan)
	if err != nil && ctx.Err() == nil { // Redis failed
		fmt.Fprintf(a.stderr, "sgctl restart: %s\n", cut(err.Error(), 4*maxCell))
	}
	out.rolloutSummary(plan.Service, len(plan.Instances), res, time.Since(start), ctx.Err() != nil)
	switch {
	case res.OK():
		return exitOK
	case err != nil && ctx.Err() == nil && isUnreachable(err):
		return exitUnreachable
	default:
		return exitFailed
	}
}

// rollout prints the start of a rolling restart.
func (p *opPrinter) rollout(service string, instances []string, maxUnavailable int, timeout time.Duration, traceID trace.TraceID) {
	obj := map[string]any{"type": "rollout", "service": service, "op": controlops.OpRestart, "instances": instances,
		"max_unavailable": maxUnavailable, "timeout_seconds": timeout.Seconds(), "trace_id": traceID.String()}
	pace := fmt.Sprintf("at most %d out of running at once", maxUnavailable)
	if maxUnavailable == 0 {
		pace = "all at once (--max-unavailable 0: no limit)"
	}
	ids := make([]string, len(instances))
	for i, id := range instances {
		ids[i] = cell(id)
	}
	p.emit(obj, "rolling restart of %s: %s; %s, each back within %s; trace %s",
		service, strings.Join(ids, ", "), pace, timeout, traceID)
}

// sentTo prints an instance's op of a rolling restart.
func (p *opPrinter) sentTo(instance string, o controlops.Op) {
	p.emit(map[string]any{"type": "sent", "instance": instance, "op": o.Name, "op_id": o.ID, "target": o.Target, "entry": o.StreamID},
		"%s  %-8s  op %s, entry %s", cell(instance), "sent", o.ID, o.StreamID)
}

// rolloutSummary prints how a rolling restart of n instances ended.
func (p *opPrinter) rolloutSummary(service string, n int, o rollout.Outcome, took time.Duration, interrupted bool) {
	why := func(ids []string) []string {
		out := make([]string, len(ids))
		for i, in := range ids {
			out[i] = fmt.Sprintf("%s (%s)", cell(in), cut(o.Why[in], 4*maxCell))
		}
		return out
	}
	failed, missing, notSent := why(o.Failed), why(o.Missing), make([]string, len(o.NotSent))
	for i, in := range o.NotSent {
		notSent[i] = cell(in)
	}
	obj := map[string]any{"type": "summary", "ok": o.OK(), "instances": n, "done": o.Done, "failed": failed,
		"missing": missing, "not_sent": notSent, "seconds": took.Seconds()}
	if o.OK() {
		p.emit(obj, "restart of %s: %d/%d instances done and serving, in %s", service, n, n, took.Round(time.Millisecond))
		return
	}
	parts := []string{fmt.Sprintf("%d/%d instances done and serving", len(o.Done), n)}
	if len(failed) > 0 {
		parts = append(parts, "failed: "+strings.Join(failed, ", "))
	}
	if len(missing) > 0 {
		parts = append(parts, "not back: "+strings.Join(missing, ", "))
	}
	if len(notSent) > 0 {
		what := "stopped"
		if interrupted {
			what = "interrupted"
		}
		parts = append(parts, what+" before restarting: "+strings.Join(notSent, ", "))
	}
	p.emit(obj, "restart of %s: %s", service, strings.Join(parts, "; "))
}
