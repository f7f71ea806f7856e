package lifecycle

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// Every transition is published by observers of the machine: a log line, and
// a status update (the entry and an sg:events entry) for the registry.

// logTransition writes the one log line per transition.
func (in *Instance) logTransition(_ context.Context, t Transition) {
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

// publishTransition hands the new status to the registry member, which delivers
// it asynchronously: it never blocks the transition. Before the member exists
// (Redis has not answered the ping yet) the update is held in memory.
func (in *Instance) publishTransition(ctx context.Context, t Transition) {
	if in.reg == nil {
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
	e := in.entryAt(t.Phase, t.At)
	in.heldMu.Lock()
	defer in.heldMu.Unlock()
	if mem := in.member.Load(); mem != nil {
		mem.Update(e, ev)
		return
	}
	if !in.heldDropped {
		in.held = append(in.held, heldUpdate{entry: e, ev: ev})
	}
}

// heldUpdate is a status update waiting for the registry member.
type heldUpdate struct {
	entry registry.Entry
	ev    *registry.Event
}

// attachMember creates the registry member, hands it the updates held so far
// (the connect transition, first), and makes later transitions go to it.
func (in *Instance) attachMember() error {
	mem, err := in.reg.Member(in.entry(phases.Connecting))
	if err != nil {
		return err
	}
	in.heldMu.Lock()
	defer in.heldMu.Unlock()
	for _, h := range in.held {
		mem.Update(h.entry, h.ev)
	}
	in.held = nil
	in.member.Store(mem)
	return nil
}

// dropHeld discards the held updates, and any later one, for an instance that
// never reached Redis.
func (in *Instance) dropHeld() {
	in.heldMu.Lock()
	defer in.heldMu.Unlock()
	in.held, in.heldDropped = nil, true
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
