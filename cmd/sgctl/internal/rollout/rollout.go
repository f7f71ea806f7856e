// Package rollout restarts the instances of a service a few at a time, run
// by the operator's side: `sgctl restart SERVICE` and the dashboard's
// rolling restart form both run it, planned and followed with package
// optrack.
//
// # How
//
// Run takes a restart plan of the whole service (optrack.NewPlan) and, in
// the plan's order, sends each instance a restart op of its own (target:
// that instance, no args), signed with the client's key, keeping at most
// MaxUnavailable of them in flight: an instance is in flight from its op's
// send until it is back, that is until its new process reported done and
// the registry shows it running in a new process (optrack's Follow). The
// next op goes out only when one in flight is back. MaxUnavailable 0 sends
// every op at once. Just before an instance's op is sent, its entry is read
// again: one that is no longer running or draining (gone, booting, failed)
// stops the rollout rather than being restarted while it is out.
//
// The first instance that does not come back stops the rollout: a final
// result other than done (failed, rejected), no done within Timeout of its
// op's send, or a done without the registry showing it back in that time.
// No further op is sent; the ops in flight are followed to their end (each
// within its Timeout), and Outcome says which instances came back, which
// failed or are missing and why, and which were never sent an op. A Redis
// error stops it the same way and is returned; so is the end of ctx
// (Ctrl-C, the dashboard's shutdown), which stops following at once.
//
// Every op carries ctx's trace context (Run starts a trace when ctx has
// none): one rollout is one trace, each instance's handling of its op a
// child of the same span id.
//
// # What the limit trusts
//
// Nothing a Redis writer without the key can forge. The limit lives in this
// process, not in Redis: an instance restarts only on a signed op addressed
// to it, and a Client with a key takes a done as final only when it is
// signed with that key (controlops.Client.Wait): the new process signs it
// with the key that verified the restart, once it is running. So forged
// registry entries and forged or deleted results can delay or stop a
// rollout, never hurry it. Without a key (ops unsigned, instances in
// insecure mode) nothing is verified: results and statuses are taken as
// Redis says, and anyone who can write to Redis can restart those instances
// anyway.
//
// The limit counts the instances this rollout took out of running: an
// instance out for another reason (a crash, another operator's restart)
// is not counted, and two rollouts of one service at once (two sgctl, or
// sgctl and a dashboard) each keep their own limit.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/cmd/sgctl/internal/optrack"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/registry"
)

// DefaultTimeout is how long an instance has to come back when
// Rollout.Timeout is zero.
const DefaultTimeout = 5 * time.Minute

// Rollout is a rolling restart's settings. Registry and Client are required.
// A Rollout may be run several times, one run at a time.
type Rollout struct {
	Registry *registry.Registry
	// Client sends the ops, signed with its key (controlops.NewClient).
	Client *controlops.Client
	// MaxUnavailable is how many instances may be in flight at once; 0
	// sends every op at once.
	MaxUnavailable int
	// Timeout is how long each instance has, from its op's send, to be back
	// (DefaultTimeout when zero).
	Timeout time.Duration
	// Every is how often the registry is read while an instance is in
	// flight (optrack.DefaultEvery when zero).
	Every time.Duration

	// OnSent is called once an instance's op is written.
	OnSent func(instance string, op controlops.Op)
	// OnResult and OnStatus are optrack.Tracker's: each result of an op
	// sent, and each status change of an instance in flight.
	OnResult func(controlops.Result)
	OnStatus func(e registry.Entry, fresh bool)
	// OnBack is called when an instance is back.
	OnBack func(instance string)
	// The callbacks are called one at a time, from Run's goroutines, and
	// never after Run returned.
}

// Outcome is what a run did.
type Outcome struct {
	// Done are the instances that came back, in the order they did.
	Done []string
	// Failed are the instances whose restart failed (a final result other
	// than done), that were not running or draining at their turn, or whose
	// op could not be sent; Why says which.
	Failed []string
	// Missing are the instances sent an op that were not back in time
	// (Timeout) or when the run was stopped; Why says what was seen.
	Missing []string
	// NotSent are the planned instances never sent an op: the rollout
	// stopped first. They were not touched.
	NotSent []string
	// Results are the final results read, by instance.
	Results map[string]controlops.Result
	// Why says, in words, why each of Failed and Missing is there.
	Why map[string]string
	// TraceID is the trace every op of the run carries.
	TraceID trace.TraceID
}

// OK reports whether every planned instance came back.
func (o Outcome) OK() bool {
	return len(o.Failed) == 0 && len(o.Missing) == 0 && len(o.NotSent) == 0
}

// step is how one instance's restart ended.
type step struct {
	instance string
	back     bool
	result   *controlops.Result // the final result, when one was read
	failed   bool               // Failed rather than Missing
	why      string
	err      error // a Redis error, or the end of Run's context
}

// Run restarts the instances of p (a restart plan: p.Instances, in order)
// as the package documentation says, and returns once every op it sent is
// over. The error is a Redis error that stopped the rollout, or ctx's when
// it ended first; the Outcome says what was done either way. A plan for
// another op than restart is an error.
func (r *Rollout) Run(ctx context.Context, p *optrack.Plan) (Outcome, error) {
	out := Outcome{Results: map[string]controlops.Result{}, Why: map[string]string{}}
	if p.Op != controlops.OpRestart {
		return out, fmt.Errorf("rollout: a rollout restarts: plan for %q", p.Op)
	}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx, _ = optrack.Trace(ctx)
	}
	out.TraceID = trace.SpanContextFromContext(ctx).TraceID()
	n := r.MaxUnavailable
	if n <= 0 || n > len(p.Instances) {
		n = len(p.Instances)
	}
	run := &runner{r: r, service: p.Service}
	run.tracker = &optrack.Tracker{Registry: r.Registry, Client: r.Client, Every: r.Every,
		OnResult: func(res controlops.Result) {
			run.call(func() {
				if r.OnResult != nil {
					r.OnResult(res)
				}
			})
		},
		OnStatus: func(e registry.Entry, fresh bool) {
			run.call(func() {
				if r.OnStatus != nil {
					r.OnStatus(e, fresh)
				}
			})
		},
	}

	steps := make(chan step)
	var wg sync.WaitGroup
	defer wg.Wait()
	next, inFlight := 0, 0
	var stopErr error
	for {
		for stopErr == nil && ctx.Err() == nil && inFlight < n && next < len(p.Instances) {
			in := p.Instances[next]
			next++
			inFlight++
			wg.Add(1)
			go func() { defer wg.Done(); steps <- run.step(ctx, in) }()
		}
		if inFlight == 0 {
			break
		}
		s := <-steps
		inFlight--
		if s.result != nil {
			out.Results[s.instance] = *s.result
		}
		switch {
		case s.back:
			out.Done = append(out.Done, s.instance)
			run.call(func() {
				if r.OnBack != nil {
					r.OnBack(s.instance)
				}
			})
			continue
		case s.failed:
			out.Failed = append(out.Failed, s.instance)
		default:
			out.Missing = append(out.Missing, s.instance)
		}
		out.Why[s.instance] = s.why
		if stopErr == nil {
			stopErr = errStopped
			if s.err != nil {
				stopErr = s.err
			}
		}
	}
	out.NotSent = slices.Clone(p.Instances[next:])
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	if errors.Is(stopErr, errStopped) {
		stopErr = nil
	}
	return out, stopErr
}

// errStopped marks a rollout stopped by an instance that did not come back.
var errStopped = errors.New("rollout stopped")

// runner is one run: the callbacks' lock and the tracker every step shares.
type runner struct {
	r       *Rollout
	service string
	tracker *optrack.Tracker
	mu      sync.Mutex // serialises the callbacks
}

func (u *runner) call(f func()) {
	u.mu.Lock()
	defer u.mu.Unlock()
	f()
}

// step restarts one instance: it plans it from its entry now, sends its op
// and follows it until it is back, Timeout passes or ctx ends.
func (u *runner) step(ctx context.Context, instance string) step {
	s := step{instance: instance}
	live, err := u.r.Registry.Instances(ctx, u.service)
	if err != nil {
		s.failed, s.err, s.why = true, err, fmt.Sprintf("reading the registry at its turn: %v", err)
		return s
	}
	p, err := optrack.NewPlan(controlops.OpRestart, u.service, instance, live, u.r.Client.Signs())
	if err != nil { // restart always has a Spec
		s.failed, s.err, s.why = true, err, err.Error()
		return s
	}
	if len(p.Instances) == 0 {
		s.failed, s.why = true, "gone from the registry at its turn: not restarted"
		if len(p.Addressed) > 0 {
			s.why = fmt.Sprintf("%s at its turn, not %v: not restarted", p.Addressed[0].Status, p.Spec.From)
		}
		return s
	}
	timeout := u.r.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	op, err := u.r.Client.Send(sctx, u.service, controlops.OpRestart, instance, nil)
	if err != nil {
		s.failed, s.err, s.why = true, fmt.Errorf("sending to %s: %w", controlops.StreamKey(u.service), err), fmt.Sprintf("sending its restart: %v", err)
		return s
	}
	u.call(func() {
		if u.r.OnSent != nil {
			u.r.OnSent(instance, op)
		}
	})
	res, err := u.tracker.Follow(sctx, p, op)
	if r, ok := res.Results[instance]; ok {
		s.result = &r
	}
	switch {
	case res.OK():
		s.back = true
	case len(res.Failed) > 0:
		s.failed, s.why = true, string(s.result.Status)
		if s.result.Reason != "" {
			s.why += ": " + s.result.Reason
		}
	case ctx.Err() != nil:
		s.err, s.why = ctx.Err(), "stopped while it restarted: "+seen(s.result)
	case err != nil && sctx.Err() == nil: // Redis, not the timeout
		s.err, s.why = err, fmt.Sprintf("reading its results: %v", err)
	default:
		s.why = fmt.Sprintf("not back within %s: %s", timeout, seen(s.result))
	}
	return s
}

// seen says what was known of an instance that is not back.
func seen(r *controlops.Result) string {
	if r == nil {
		return "no done from its new process"
	}
	return "done, not yet seen running in a new process"
}
