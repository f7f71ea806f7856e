package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/cmd/sgctl/internal/optrack"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/registry"
)

// defaultOpTimeout bounds --wait when --timeout is not given.
const defaultOpTimeout = 5 * time.Minute

// opFlags are the flags the op commands share.
type opFlags struct {
	instance       string
	wait           bool
	timeout        time.Duration
	maxUnavailable int // restart only
	asJSON         bool
}

var restartCommand = &command{
	name:    "restart",
	signs:   true,
	summary: "Restart the instances of a service, one at a time by default",
	usage:   "restart SERVICE [--instance ID] [--max-unavailable N] [--wait] [--timeout D] [--json]",
	help: `Restarts the instances of a service a few at a time: sgctl runs the
rollout itself. It sends each instance a signed restart op of its own (to
sg:control:{<name>}, target the instance), and sends the next one only when
an instance it restarted is back: its new process reported done, signed with
SG_CONTROL_KEY, and the registry shows it running in a new process. Each
instance leaves running through the shutdown states and replaces itself with
a fresh process of the same binary, arguments, environment and instance id.

At most --max-unavailable instances (default 1, as the dashboard's form) are
out of running because of the rollout at any moment, whatever anyone writes
to Redis; --max-unavailable 0 sends every op at once, and the service serves
nothing until the first is back.

sgctl stays until the rollout ends, --wait or not, printing each op sent,
each result and each instance's return to running. The first instance that
does not come back stops the rollout: a failed or rejected result, or not
back within --timeout of its op (the timeout is per instance). No further op
is sent, the instances not yet sent one are left untouched, and sgctl exits
1 naming each. Ctrl-C stops it the same way (the ops already sent still
run). It exits 0 when every instance is back.

With --instance, one op goes to that instance alone. With --wait sgctl
follows it as above and exits 0 once it is back, 1 when it failed, was
rejected or --timeout passed; without --wait it prints the op's id and
returns.`,
	flags: func(fs *flag.FlagSet, a *app) func(context.Context, []string) int {
		f := &opFlags{}
		f.declare(fs)
		fs.IntVar(&f.maxUnavailable, "max-unavailable", 1, "at most `N` instances out of running at once (0: all at once, no limit)")
		return func(ctx context.Context, args []string) int {
			return a.op(ctx, "restart", args, f)
		}
	},
}

var pullCommand = &command{
	name:    "pull",
	signs:   true,
	summary: "Make the instances of a service re-read their settings",
	usage:   "pull SERVICE [--instance ID] [--wait] [--timeout D] [--json]",
	help: `Sends a signed pull op to the service's control stream (sg:control:{<name>}).
Each addressed instance goes running -> pulling -> running, calling the pull
handler the service registered (the demo re-reads its settings).

With --wait sgctl prints each instance's result as it arrives and exits 0
only when every addressed instance reported done and is running again before
--timeout; 1 when one reported failed or rejected, or the timeout passed.`,
	flags: func(fs *flag.FlagSet, a *app) func(context.Context, []string) int {
		f := &opFlags{}
		f.declare(fs)
		return func(ctx context.Context, args []string) int {
			return a.op(ctx, "pull", args, f)
		}
	},
}

var drainCommand = &command{
	name:    "drain",
	signs:   true,
	summary: "Take instances out of rotation without stopping them",
	usage:   "drain SERVICE [--instance ID] [--wait] [--timeout D] [--json]",
	help: `Sends a signed drain op to the service's control stream (sg:control:{<name>}).
Each addressed running instance goes running -> draining: its readiness
(/readyz) reports 503 and its registry status is draining, so load balancers
and clients that route to running instances stop sending it work, while it
keeps running. Undo it with undrain; restart and a stop work from draining
(a stop does not wait the drain delay again).

With --wait sgctl prints each instance's result as it arrives and exits 0
only when every addressed instance reported done and the registry shows it
draining before --timeout; 1 when one reported failed or rejected, or the
timeout passed.`,
	flags: func(fs *flag.FlagSet, a *app) func(context.Context, []string) int {
		f := &opFlags{}
		f.declare(fs)
		return func(ctx context.Context, args []string) int {
			return a.op(ctx, controlops.OpDrain, args, f)
		}
	},
}

var undrainCommand = &command{
	name:    "undrain",
	signs:   true,
	summary: "Put drained instances back in rotation",
	usage:   "undrain SERVICE [--instance ID] [--wait] [--timeout D] [--json]",
	help: `Sends a signed undrain op to the service's control stream (sg:control:{<name>}).
Each addressed draining instance goes back to running (readiness 200). An
instance that drains because it is stopping (its drain delay) rejects it.

With --wait sgctl prints each instance's result as it arrives and exits 0
only when every addressed instance reported done and runs again before
--timeout; 1 when one reported failed or rejected, or the timeout passed.`,
	flags: func(fs *flag.FlagSet, a *app) func(context.Context, []string) int {
		f := &opFlags{}
		f.declare(fs)
		return func(ctx context.Context, args []string) int {
			return a.op(ctx, controlops.OpUndrain, args, f)
		}
	},
}

func (f *opFlags) declare(fs *flag.FlagSet) {
	fs.StringVar(&f.instance, "instance", "", "send the op to this instance `ID` only (default: every instance)")
	fs.BoolVar(&f.wait, "wait", false, "wait for every instance's result and its return to running")
	fs.DurationVar(&f.timeout, "timeout", defaultOpTimeout, "with --wait, give up after `D` (a rolling restart: on each instance)")
	fs.BoolVar(&f.asJSON, "json", false, "print results as JSON lines")
}

// checkOpArgs validates what the op commands share; it returns the service.
func (a *app) checkOpArgs(args []string, f *opFlags) (string, int, bool) {
	if len(args) == 0 {
		return "", a.usageError("missing SERVICE argument"), false
	}
	if len(args) > 1 {
		return "", a.usageError("too many arguments %q: want one SERVICE", args), false
	}
	if err := validService(args[0]); err != nil {
		return "", a.usageError("%v", err), false
	}
	if f.instance != "" {
		if err := fleetenv.ValidateInstance(f.instance); err != nil {
			return "", a.usageError("invalid value %q for flag --instance: %v", f.instance, err), false
		}
	}
	if f.timeout <= 0 {
		return "", a.usageError("invalid value %q for flag --timeout: want a duration > 0", f.timeout), false
	}
	if f.maxUnavailable < 0 {
		return "", a.usageError("invalid value %d for flag --max-unavailable: want 1 or more, or 0 (all at once)", f.maxUnavailable), false
	}
	return args[0], 0, true
}

// opPoll is how often --wait reads the registry to see instances leave and
// return to running.
const opPoll = 100 * time.Millisecond

func (a *app) op(ctx context.Context, op string, args []string, f *opFlags) int {
	service, code, ok := a.checkOpArgs(args, f)
	if !ok {
		return code
	}
	cn, code := a.connect(ctx)
	if cn == nil {
		return code
	}
	defer cn.Close()
	out := &opPrinter{w: a.stdout, json: f.asJSON, signs: len(cn.controlKey) > 0}
	reg := registry.New(cn.client, registry.WithLogger(a.warner()))
	// A restart of a whole service is a rollout that sgctl runs: it
	// waits, --wait or not.
	rolling := op == controlops.OpRestart && f.instance == ""
	plan, code, ok := a.plan(ctx, cn, reg, op, service, f.instance, f.wait || rolling)
	if !ok {
		return code
	}
	if rolling {
		return a.rollout(ctx, cn, reg, plan, f, out)
	}

	ctx, traceID := optrack.Trace(ctx)
	client := controlops.NewClient(cn.client, cn.controlKey)
	sent, err := client.Send(ctx, service, op, plan.Target, nil)
	if err != nil {
		fmt.Fprintf(a.stderr, "sgctl %s: sending to %s: %s\n", op, controlops.StreamKey(service), cut(err.Error(), 4*maxCell))
		if isUnreachable(err) {
			return exitUnreachable
		}
		return exitFailed
	}
	out.sent(service, sent, traceID, plan.Instances)
	if !f.wait {
		return exitOK
	}

	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	tr := &optrack.Tracker{Registry: reg, Client: client, Every: opPoll, OnResult: out.result, OnStatus: out.status}
	res, err := tr.Follow(wctx, plan, sent)
	if err != nil && wctx.Err() == nil { // Redis failed, not the timeout
		fmt.Fprintf(a.stderr, "sgctl %s: reading results: %s\n", op, cut(err.Error(), 4*maxCell))
		if isUnreachable(err) {
			return exitUnreachable
		}
		return exitFailed
	}
	var failed, missing []string
	for _, in := range res.Failed {
		r := res.Results[in]
		failed = append(failed, fmt.Sprintf("%s (%s: %s)", cell(in), cell(string(r.Status)), dash(cut(r.Reason, 4*maxCell))))
	}
	for _, in := range res.Missing {
		if _, ok := res.Results[in]; ok {
			missing = append(missing, cell(in)+" (done, not yet seen "+string(plan.Spec.Until)+")")
		} else {
			missing = append(missing, cell(in)+" (no result)")
		}
	}
	out.summary(op, string(plan.Spec.Until), service, len(plan.Instances), failed, missing, time.Since(start), ctx.Err() != nil)
	if !res.OK() {
		return exitFailed
	}
	return exitOK
}

// plan reads the service's live entries and plans op for them (instance
// "" for all), naming on stderr the addressed instances that will not run
// it. It fails (exit 1) when nothing is addressed, or, when the caller
// waits, when no addressed instance's status accepts the op.
func (a *app) plan(ctx context.Context, cn *conn, reg *registry.Registry, op, service, instance string, wait bool) (*optrack.Plan, int, bool) {
	// The instances to wait for are those addressed and in a status that
	// accepts the op now: one that is still booting may not have started
	// its daemon (phase 8.5) and would never answer.
	live, err := reg.Instances(ctx, service)
	if err != nil {
		return nil, a.redisError(cn, err), false
	}
	plan, err := optrack.NewPlan(op, service, instance, live, len(cn.controlKey) > 0)
	if err != nil { // not for the op commands: each sends an op that has a Spec
		fmt.Fprintf(a.stderr, "sgctl %s: %v\n", op, err)
		return nil, exitUsage, false
	}
	if len(plan.Addressed) == 0 {
		if instance != "" {
			fmt.Fprintf(a.stderr, "sgctl %s: instance %q of service %q is not in the registry (never registered, stopped, or expired)\n", op, instance, service)
		} else {
			fmt.Fprintf(a.stderr, "sgctl %s: service %q has no live instances\n", op, service)
		}
		return nil, exitFailed, false
	}
	from := strings.Join(plan.Spec.From, " or ")
	for _, w := range plan.Warnings {
		if w.Reason == optrack.WrongStatus {
			fmt.Fprintf(a.stderr, "sgctl %s: %s/%s is %s, not %s: it will not run the op\n", op, service, cell(w.Entry.Instance), cell(w.Entry.Status), from)
		}
	}
	if wait && len(plan.Instances) == 0 {
		fmt.Fprintf(a.stderr, "sgctl %s: no instance of service %q is %s: nothing to wait for\n", op, service, from)
		return nil, exitFailed, false
	}
	if len(cn.controlKey) == 0 {
		fmt.Fprintf(a.stderr, "sgctl %s: %s is unset: the op is sent unsigned, and only instances with %s=true accept it\n",
			op, fleetenv.ControlKey, fleetenv.ControlInsecure)
	}
	for _, w := range plan.Warnings {
		switch w.Reason {
		case optrack.ControlDisabled:
			fmt.Fprintf(a.stderr, "sgctl %s: %s/%s has control ops disabled (no %s): it will reject the op\n",
				op, service, w.Entry.Instance, fleetenv.ControlKey)
		case optrack.SignedOnly:
			fmt.Fprintf(a.stderr, "sgctl %s: %s/%s requires signed ops: it will reject this one\n", op, service, w.Entry.Instance)
		case optrack.UnsignedResults:
			fmt.Fprintf(a.stderr, "sgctl %s: %s/%s is in insecure mode: its results are unsigned, so sgctl cannot tell its done from a forged one and waits for it until --timeout (give it %s)\n",
				op, service, cell(w.Entry.Instance), fleetenv.ControlKey)
		}
	}
	return plan, 0, true
}

// opPrinter writes the progress of an op, as text or JSON lines.
// It is used from the Wait callback and the registry poller at once. Text
// fields read from Redis (instance ids, states, reasons) are cleaned and cut;
// JSON goes through safeJSON.
type opPrinter struct {
	mu    sync.Mutex
	w     io.Writer
	json  bool
	signs bool // sgctl has a key: a done is believed only when signed with it
}

func (p *opPrinter) emit(obj map[string]any, format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json {
		b, _ := json.Marshal(obj) // maps of strings, numbers and bools
		fmt.Fprintf(p.w, "%s\n", safeJSON(b))
		return
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}

func (p *opPrinter) sent(service string, o controlops.Op, traceID trace.TraceID, waitFor []string) {
	obj := map[string]any{"type": "sent", "service": service, "op": o.Name, "op_id": o.ID, "target": o.Target, "entry": o.StreamID, "instances": waitFor}
	tid := ""
	if traceID.IsValid() {
		tid = traceID.String()
		obj["trace_id"] = tid
	}
	ids := make([]string, len(waitFor))
	for i, id := range waitFor {
		ids[i] = cell(id)
	}
	p.emit(obj, "%s sent to %s (target %s): op %s, entry %s, trace %s; instances: %s",
		o.Name, service, o.Target, o.ID, o.StreamID, dash(tid), dash(strings.Join(ids, ", ")))
}

// keyIDRE is the form of a controlops.KeyID; a result's key_id is shown only
// in that form (it is read from Redis).
var keyIDRE = regexp.MustCompile(`^[0-9a-f]{8}$`)

func (p *opPrinter) result(r controlops.Result) {
	obj := map[string]any{"type": "result", "instance": r.Instance, "status": string(r.Status), "state": r.State, "pid": r.PID, "at": r.At.UTC()}
	if r.Reason != "" {
		obj["reason"] = r.Reason
	}
	line := fmt.Sprintf("%s  %-8s  state %s, pid %d", cell(r.Instance), cell(string(r.Status)), dash(cell(r.State)), r.PID)
	if keyIDRE.MatchString(r.KeyID) {
		obj["key_id"] = r.KeyID
		line += ", key " + r.KeyID
	}
	if r.Reason != "" {
		line += ": " + cut(r.Reason, 4*maxCell)
	}
	if p.signs {
		obj["verified"] = r.Verified
		if r.Status == controlops.StatusDone && !r.Verified {
			line += " (not signed with SG_CONTROL_KEY: not taken for a done)"
		}
	}
	p.emit(obj, "%s", line)
}

func (p *opPrinter) status(e registry.Entry, fresh bool) {
	obj := map[string]any{"type": "status", "instance": e.Instance, "status": e.Status, "pid": e.PID, "started_at": e.StartedAt.UTC(), "new_process": fresh}
	proc := "old process"
	if fresh {
		proc = "new process"
	}
	p.emit(obj, "%s  %-8s  %s (pid %d, %s)", cell(e.Instance), "status", cell(e.Status), e.PID, proc)
}

func (p *opPrinter) summary(op, until, service string, n int, failed, missing []string, took time.Duration, interrupted bool) {
	ok := len(failed) == 0 && len(missing) == 0
	obj := map[string]any{"type": "summary", "ok": ok, "instances": n, "failed": failed, "missing": missing, "seconds": took.Seconds()}
	if ok {
		p.emit(obj, "%s of %s: %d/%d instances done and %s, in %s", op, service, n, n, until, took.Round(time.Millisecond))
		return
	}
	why := "timed out"
	if interrupted {
		why = "interrupted"
	}
	var parts []string
	if len(failed) > 0 {
		parts = append(parts, "failed: "+strings.Join(failed, ", "))
	}
	if len(missing) > 0 {
		parts = append(parts, why+" waiting for: "+strings.Join(missing, ", "))
	}
	p.emit(obj, "%s of %s: %s", op, service, strings.Join(parts, "; "))
}
