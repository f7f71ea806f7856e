package optrack

import (
	"context"
	"sync"
	"time"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/registry"
)

// DefaultEvery is how often Follow reads the registry when Tracker.Every
// is zero.
const DefaultEvery = 100 * time.Millisecond

// Tracker follows sent ops. Registry and Client are required; the rest is
// optional. One Tracker may follow several ops at once.
type Tracker struct {
	// Registry is read every Every for the planned instances' entries.
	Registry *registry.Registry
	// Client reads the op's results (Client.Wait).
	Client *controlops.Client
	// Every is how often the registry is read (DefaultEvery when zero);
	// once every instance reported, Follow reads it twice as often until
	// they are back.
	Every time.Duration
	// OnResult is called with each result of the op from a planned
	// instance (accepted, then done, failed or rejected), in stream order.
	OnResult func(controlops.Result)
	// OnStatus is called when the registry shows a planned instance in
	// another status than last seen, or the same status in a new process
	// (fresh: another started_at or pid than when planned).
	//
	// OnResult and OnStatus are called one at a time, from Follow's
	// goroutines, and never after Follow returned.
	OnStatus func(e registry.Entry, fresh bool)
}

// Outcome is what Follow knows when it returns.
type Outcome struct {
	// Results are the final results read, by instance (planned instances
	// only).
	Results map[string]controlops.Result
	// Failed are the planned instances whose final result is not done
	// (failed or rejected), in plan order.
	Failed []string
	// Missing are the planned instances with no final result, or done but
	// not seen back (in a status of role Spec.Until), in plan order.
	// Results tells which.
	Missing []string
}

// OK reports whether every planned instance is done and back.
func (o Outcome) OK() bool { return len(o.Failed) == 0 && len(o.Missing) == 0 }

// Follow follows op sent for plan p until every planned instance reported
// a final result and, when all were done, the registry shows each one back
// in a status whose role is p.Spec.Until; or until ctx ends. It returns the
// Outcome and Wait's error: nil, a Redis error, or one wrapping ctx.Err().
// Redis failing stops Follow at once; registry reads that fail are retried.
// Follow starts one goroutine, the registry poller, and stops and awaits it
// before returning. A plan without Instances has nothing to follow: Follow
// returns at once.
func (t *Tracker) Follow(ctx context.Context, p *Plan, op controlops.Op) (Outcome, error) {
	if len(p.Instances) == 0 {
		return Outcome{Results: map[string]controlops.Result{}}, nil
	}
	every := t.Every
	if every <= 0 {
		every = DefaultEvery
	}
	w := &watch{t: t, p: p, last: map[string]string{}, back: map[string]bool{}}
	for in, e := range p.before {
		w.last[in] = e.Status
	}
	pollCtx, stopPoll := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); w.poll(pollCtx, every) }()
	defer func() { stopPoll(); wg.Wait() }()

	final, err := t.Client.Wait(ctx, p.Service, op, p.Instances, func(r controlops.Result) {
		if p.Runs(r.Instance) && t.OnResult != nil {
			w.mu.Lock()
			defer w.mu.Unlock()
			t.OnResult(r)
		}
	})
	out := Outcome{Results: map[string]controlops.Result{}}
	for _, in := range p.Instances {
		if r, ok := final[in]; ok {
			out.Results[in] = r
			if r.Status != controlops.StatusDone {
				out.Failed = append(out.Failed, in)
			}
		}
	}
	if err == nil && len(out.Failed) == 0 {
		// Every instance said done; wait until the registry shows each one
		// back (a restart's new process writes done once running, but its
		// entry is written asynchronously).
		w.awaitBack(ctx, every/2)
	}
	stopPoll()
	wg.Wait()
	for _, in := range p.Instances {
		r, ok := out.Results[in]
		if !ok || r.Status == controlops.StatusDone && !w.isBack(in) {
			out.Missing = append(out.Missing, in)
		}
	}
	return out, err
}

// watch is one op's registry follower.
type watch struct {
	t *Tracker
	p *Plan

	mu   sync.Mutex        // also serialises the callbacks
	last map[string]string // instance -> last status reported (+"/new" for a new process)
	back map[string]bool   // instance -> seen in a status of role Spec.Until (restart: in a new process)
}

// poll reads the registry every tick until ctx ends.
func (w *watch) poll(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		w.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// check reads the registry once and reports what changed.
func (w *watch) check(ctx context.Context) {
	entries, err := w.t.Registry.Instances(ctx, w.p.Service)
	if err != nil {
		return // the next tick retries; Wait reports a Redis that is gone
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range entries {
		old, ok := w.p.before[e.Instance]
		if !ok {
			continue
		}
		fresh := !e.StartedAt.Equal(old.StartedAt) || e.PID != old.PID
		key := e.Status
		if fresh {
			key += "/new"
		}
		if w.last[e.Instance] != key {
			w.last[e.Instance] = key
			if w.t.OnStatus != nil {
				w.t.OnStatus(e, fresh)
			}
		}
		if w.p.back(e, fresh) {
			w.back[e.Instance] = true
		}
	}
}

// awaitBack returns once every planned instance is back, or ctx ends.
func (w *watch) awaitBack(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		w.check(ctx)
		if w.allBack() {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (w *watch) allBack() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, in := range w.p.Instances {
		if !w.back[in] {
			return false
		}
	}
	return true
}

func (w *watch) isBack(in string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.back[in]
}
