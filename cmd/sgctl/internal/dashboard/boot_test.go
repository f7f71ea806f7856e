package dashboard

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// publishBoot writes the transitions of a boot of id that starts at t0 and
// spends delays[state] in each boot state (0 when absent), up to running.
// Another instance's transitions are interleaved. It returns the time of
// the move into running.
func publishBoot(t *testing.T, reg *registry.Registry, id string, t0 time.Time, delays map[phases.State]time.Duration) time.Time {
	t.Helper()
	at := t0
	state := phases.Lifecycle().Initial
	for state != phases.Running {
		ev, ok := phases.NextEvent(phases.Lifecycle(), state)
		if !ok { // connecting: its outcomes
			ev = phases.PingOK
		}
		alt := phases.Lifecycle().Alternatives(ev, state)
		next := alt[0].To
		at = at.Add(delays[state])
		for _, who := range []string{id, "other"} {
			if _, err := reg.Publish(t.Context(), registry.Event{Service: "demo", Instance: who, Event: string(ev), From: string(state), To: string(next), Time: at}); err != nil {
				t.Fatal(err)
			}
		}
		state = next
	}
	return at
}

func TestTheWaterfallShowsTheLastBootsTimeInEachPhase(t *testing.T) {
	r, _ := miniRig(t, nil)
	reg := registry.New(r.rdb)
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	// An earlier boot, slow elsewhere: it must not be the one shown.
	publishBoot(t, reg, "demo-1", t0, map[phases.State]time.Duration{phases.Configuring: 2 * time.Second})
	t1 := t0.Add(10 * time.Second)
	delays := map[phases.State]time.Duration{
		phases.Init: 3 * time.Millisecond, phases.LoadingModules: 300 * time.Millisecond, phases.Starting: 500 * time.Millisecond,
	}
	e := entry("demo", "demo-1", "running")
	e.StartedAt = t1
	put(t, r.rdb, e)
	end := publishBoot(t, reg, "demo-1", t1, delays)

	b, err := r.srv.lastBoot(t.Context(), "demo", "demo-1", t1)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Found || !b.Done || b.Outcome != "running" || b.Total != end.Sub(t1) {
		t.Fatalf("boot %+v: want found, done, running after %v", b, end.Sub(t1))
	}
	var got []string
	for _, st := range b.Steps {
		got = append(got, fmt.Sprintf("%s=%v", st.State, st.Dur))
	}
	var want []string
	for _, s := range phases.Lifecycle().StatesIn(phases.GroupBoot) {
		want = append(want, fmt.Sprintf("%s=%v", s, delays[s]))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("steps\n %s\nwant\n %s", strings.Join(got, " "), strings.Join(want, " "))
	}

	page := r.get(t, "/instance?service=demo&id=demo-1").body
	for _, want := range []string{
		`<g class="wf-row" data-state="loading_modules" data-ms="300">`,
		`<g class="wf-row" data-state="starting" data-ms="500">`,
		`reached <b>running</b> after 803ms`,
		`<img id="diagram" src="/diagram.svg?state=running"`,
		`&#34;owner&#34;`, // the entry's JSON, escaped in the <pre>
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the instance page lacks %s", want)
		}
	}
}

func TestABootStillUnderWayEndsAtNow(t *testing.T) {
	r, _ := miniRig(t, nil)
	reg := registry.New(r.rdb)
	t0 := time.Now().Add(-2 * time.Second)
	for _, ev := range []registry.Event{
		{Event: "connect", From: "init", To: "connecting", Time: t0},
		{Event: "ping_ok", From: "connecting", To: "configuring", Time: t0.Add(10 * time.Millisecond)},
	} {
		ev.Service, ev.Instance = "demo", "demo-1"
		if _, err := reg.Publish(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}
	b, err := r.srv.lastBoot(t.Context(), "demo", "demo-1", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	last := b.Steps[len(b.Steps)-1]
	if b.Done || b.Outcome != "configuring" || !last.Open || last.Dur < time.Second {
		t.Errorf("boot %+v, last step %+v: want configuring still open for about 2s", b, last)
	}
}

func TestTheDiagramHighlightsTheStateAskedForAndOnlyTheTablesStates(t *testing.T) {
	requireDot(t)
	r, _ := miniRig(t, nil)
	res := r.get(t, "/diagram.svg?state=running")
	if res.code != 200 || res.hdr.Get("Content-Type") != "image/svg+xml" || !strings.Contains(res.body, "#ffd54f") {
		t.Fatalf("GET /diagram.svg?state=running = %d %s, highlighted: %v", res.code, res.hdr.Get("Content-Type"), strings.Contains(res.body, "#ffd54f"))
	}
	if res := r.get(t, "/diagram.svg?state=%3Cscript%3E"); res.code != 200 || strings.Contains(res.body, "<script") || strings.Contains(res.body, "#ffd54f") {
		t.Errorf("an unknown state reached the SVG or highlighted something")
	}
}
