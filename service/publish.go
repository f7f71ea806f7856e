package service

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// Every transition is published by observers of the machine: a log line, and
// a status update (the entry and an sg:events entry) for the registry.

// logTransition writes the one log line per transition.
func (in *Instance) logTransition(_ context.Context, t lifecycle.Transition) {
	args := []any{"from", string(t.From), "to", string(t.To), "event", string(t.Event), "phase", t.Phase.Label, "duration", t.Duration()}
	if g := t.Guard.String(); g != "" {
		args = append(args, "guard", g)
	}
	if t.Cause != nil {
		args = append(args, "error", t.Cause.Error())
		in.log.Warn("transition", args...)
		return
	}
	in.log.Info("transition", args...)
}

// linkState is where the instance's link to the registry is.
type linkState uint8

const (
	linkOff      linkState = iota // no Redis: nothing is published
	linkHolding                   // Redis has not answered yet: updates are held in memory
	linkAttached                  // the registry member exists: updates go to it
	linkDropped                   // the instance never reached Redis: updates are discarded
	linkClosed                    // the shutdown closed the member: later updates are discarded
)

// registryLink delivers the instance's status updates to its registry
// member, which writes them asynchronously: a transition never waits on
// Redis. Before Redis answered the ping (phase 2) there is no member yet,
// and the updates are held, the connect transition first.
type registryLink struct {
	reg *registry.Registry // nil without Redis

	mu    sync.Mutex
	state linkState
	held  []heldUpdate     // in linkHolding
	mem   *registry.Member // in linkAttached
}

// heldUpdate is a status update waiting for the registry member.
type heldUpdate struct {
	entry registry.Entry
	ev    *registry.Event
}

// setup builds the registry of an instance with Redis.
func (l *registryLink) setup(in *Instance) {
	if in.cfg.redis == nil {
		return
	}
	// The registry adds the service and instance to its members' lines: it
	// gets the logger without them.
	l.reg = registry.New(in.cfg.redis, registry.WithTTL(in.cfg.ttl), registry.WithClock(in.cfg.clock), registry.WithLogger(in.cfg.log),
		registry.WithWriteTimeout(in.cfg.redisTimeout),
		// Retried at least every second, so an instance registers within
		// about a second of Redis answering again.
		registry.WithRetryBackoff(100*time.Millisecond, time.Second))
	l.state = linkHolding
}

// member returns the registry member while the link is attached.
func (l *registryLink) member() (*registry.Member, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mem, l.state == linkAttached
}

// attach creates the registry member with entry e, hands it the updates held
// so far, and makes later transitions go to it.
func (l *registryLink) attach(e registry.Entry) error {
	mem, err := l.reg.Member(e)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, h := range l.held {
		mem.Update(h.entry, h.ev)
	}
	l.held, l.mem, l.state = nil, mem, linkAttached
	return nil
}

// drop discards the held updates, and every later one, of an instance that
// never reached Redis.
func (l *registryLink) drop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state == linkHolding {
		l.held, l.state = nil, linkDropped
	}
}

// update delivers, holds or discards one status update.
func (l *registryLink) update(e registry.Entry, ev *registry.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch l.state {
	case linkAttached:
		l.mem.Update(e, ev)
	case linkHolding:
		l.held = append(l.held, heldUpdate{entry: e, ev: ev})
	}
}

// close closes the member, flushing what is queued within ctx (an ended ctx
// drops it), and discards every later update.
func (l *registryLink) close(ctx context.Context) error {
	l.mu.Lock()
	mem, attached := l.mem, l.state == linkAttached
	l.state, l.mem, l.held = linkClosed, nil, nil
	l.mu.Unlock()
	if !attached {
		return nil
	}
	return mem.Close(ctx)
}

// publishTransition hands the new status to the registry link; it never
// blocks the transition.
func (in *Instance) publishTransition(ctx context.Context, t lifecycle.Transition) {
	if in.link.reg == nil {
		return
	}
	ev := &registry.Event{
		Service:  in.cfg.name,
		Instance: in.cfg.instance,
		Event:    string(t.Event),
		From:     string(t.From),
		To:       string(t.To),
		Guard:    t.Guard.String(),
		Phase:    t.Phase.Label,
		Degraded: in.degraded.Load(),
		Time:     t.At,
	}
	if t.Cause != nil {
		ev.Error = t.Cause.Error()
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		ev.TraceID = sc.TraceID().String()
	}
	// The transition already carries its state's description and time.
	in.link.update(in.entryAt(t.Phase, t.At), ev)
}

// entry is the registry entry for state s.
func (in *Instance) entry(s phases.State) registry.Entry {
	info, _ := in.table.State(s)
	return in.entryAt(info, in.cfg.clock.Now())
}

// entryAt is the registry entry for the state info describes, updated at at.
// While a failure unwinds the instance, the entry says why.
func (in *Instance) entryAt(info phases.StateInfo, at time.Time) registry.Entry {
	var why string
	if err := in.failed(); err != nil {
		why = err.Error()
	}
	return registry.Entry{
		Error:      why,
		Service:    in.cfg.name,
		Instance:   in.cfg.instance,
		Status:     string(info.Name),
		Phase:      info.Label,
		Host:       in.host,
		PID:        in.pid,
		Version:    in.cfg.version,
		StartedAt:  in.started,
		UpdatedAt:  at,
		Degraded:   in.degraded.Load(),
		HealthAddr: in.HealthAddr(),
		Addr:       in.AdvertisedAddr(),
		Control:    in.controlMode(),
	}
}
