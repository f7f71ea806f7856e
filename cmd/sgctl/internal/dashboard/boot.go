package dashboard

import (
	"context"
	"fmt"
	"time"

	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// bootPage is how many stream entries one read of the backwards search for
// a boot takes; the search reads at most the whole (capped) stream.
const bootPage = 1000

// bootStep is one state of a boot: when it was entered, relative to the
// boot's start, and how long the instance stayed.
type bootStep struct {
	State      string
	Label      string
	Group      string
	Start, Dur time.Duration
	Open       bool   // still the instance's state: Dur runs to now
	Error      string // the error of the transition that left it
	Event      string // the event that left it
}

// Ms is the step's duration in whole milliseconds.
func (b bootStep) Ms() int64 { return b.Dur.Milliseconds() }

// boot is an instance's last boot, read from sg:events: from the
// transition out of init (connect) to running (the first state of role
// serving in the table), or to a terminal state when it failed, or to now
// when it is still booting.
type boot struct {
	Found   bool
	At      time.Time
	Steps   []bootStep
	Total   time.Duration
	Outcome string // the state the boot reached: running, failed, ..., or the current one
	Done    bool
}

// lastBoot finds the instance's latest connect event, reading the stream
// backwards a page at a time, and the instance's transitions after it.
func (s *Server) lastBoot(ctx context.Context, service, instance string, startedAt time.Time) (boot, error) {
	var mine []registry.Event // newest first
	end := "+"
	found := false
	for !found {
		// A bounded read, which leaves out (unread) entries over an event's size.
		p, err := s.reg.EventRange(ctx, end, "-", bootPage, true)
		if err != nil {
			return boot{}, fmt.Errorf("reading %s: %w", registry.EventsKey, err)
		}
		for _, ev := range p.Events {
			if ev.Service != service || ev.Instance != instance {
				continue
			}
			mine = append(mine, ev)
			if ev.Event == string(phases.Connect) && ev.From == string(s.table.Initial) {
				found = true
				break
			}
		}
		if !p.More && len(p.Events)+len(p.Skipped) < bootPage {
			break
		}
		end = "(" + p.Next
	}
	if !found {
		return boot{}, nil
	}
	// Oldest first, from connect on.
	evs := make([]registry.Event, len(mine))
	for i, ev := range mine {
		evs[len(mine)-1-i] = ev
	}
	return s.bootSteps(evs, startedAt, s.cfg.Now()), nil
}

// bootSteps lays out a boot from its transitions, oldest first, the first
// being connect. init has no transition into it: it starts at startedAt
// (the entry's started_at) when that is the same process, shortly before
// connect.
func (s *Server) bootSteps(evs []registry.Event, startedAt, now time.Time) boot {
	b := boot{Found: true, At: evs[0].Time}
	if !startedAt.IsZero() && !startedAt.After(b.At) && b.At.Sub(startedAt) < time.Minute {
		b.At = startedAt
		b.Steps = append(b.Steps, s.step(string(s.table.Initial), 0, evs[0].Time.Sub(startedAt)))
		b.Steps[0].Event, b.Steps[0].Error = evs[0].Event, evs[0].Error
	}
	for i, ev := range evs {
		st := s.step(ev.To, ev.Time.Sub(b.At), 0)
		info, _ := s.table.State(phases.State(ev.To))
		if info.Role == phases.RoleServing || info.Terminal {
			b.Outcome, b.Done = ev.To, true
			b.Total = ev.Time.Sub(b.At)
			break
		}
		if i+1 < len(evs) {
			next := evs[i+1]
			st.Dur, st.Event, st.Error = next.Time.Sub(ev.Time), next.Event, next.Error
		} else {
			st.Dur, st.Open = now.Sub(ev.Time), true
			b.Outcome = ev.To
			b.Total = now.Sub(b.At)
		}
		b.Steps = append(b.Steps, st)
	}
	return b
}

func (s *Server) step(state string, start, dur time.Duration) bootStep {
	info, _ := s.table.State(phases.State(state))
	return bootStep{State: state, Label: info.Label, Group: s.group(state), Start: start, Dur: dur}
}

// bar is a bootStep laid out on the waterfall's SVG, in user units.
type bar struct {
	bootStep
	X, W, TextX, TextY, RectY float64
}

// waterfall is the SVG geometry of a boot.
type waterfall struct {
	boot
	Bars          []bar
	Width, Height float64
	Left          float64 // where the time axis starts
	LabelX        float64 // where the state names end
}

const (
	wfWidth  = 760.0
	wfLeft   = 190.0 // room for "6 building_adapters"
	wfRight  = 80.0  // room for the duration after the longest bar
	wfRow    = 22.0
	wfMargin = 6.0
)

func layout(b boot) waterfall {
	w := waterfall{boot: b, Width: wfWidth, Left: wfLeft, LabelX: wfLeft - 8}
	total := b.Total
	for _, st := range b.Steps {
		total = max(total, st.Start+st.Dur)
	}
	span := wfWidth - wfLeft - wfRight
	scale := 0.0
	if total > 0 {
		scale = span / float64(total)
	}
	for i, st := range b.Steps {
		x := wfLeft + float64(st.Start)*scale
		bw := max(1, float64(st.Dur)*scale)
		y := wfMargin + float64(i)*wfRow
		w.Bars = append(w.Bars, bar{bootStep: st, X: x, W: bw, TextX: x + bw + 4, TextY: y + 14, RectY: y + 3})
	}
	w.Height = 2*wfMargin + float64(len(b.Steps))*wfRow
	return w
}

// zeroStart is the entry's started_at, or the zero time without an entry.
func (in *instance) zeroStart() (t time.Time) {
	if in != nil {
		t = in.StartedAt
	}
	return t
}
