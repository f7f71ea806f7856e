package diagrams

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/internal/tabletest"
	"github.com/stargazer/lifecycle/phases"
)

func TestRenderingIsDeterministic(t *testing.T) {
	for _, opts := range [][]Option{nil, {Highlight(phases.Running)}} {
		if a, b := Mermaid(phases.Lifecycle(), opts...), Mermaid(phases.Lifecycle(), opts...); !bytes.Equal(a, b) {
			t.Errorf("Mermaid differs between two renderings:\n%s\n---\n%s", a, b)
		}
		if a, b := DOT(phases.Lifecycle(), opts...), DOT(phases.Lifecycle(), opts...); !bytes.Equal(a, b) {
			t.Errorf("DOT differs between two renderings:\n%s\n---\n%s", a, b)
		}
		if a, b := Markdown(phases.Lifecycle(), opts...), Markdown(phases.Lifecycle(), opts...); !bytes.Equal(a, b) {
			t.Errorf("Markdown differs between two renderings")
		}
	}
}

func TestEveryStateAppearsWithItsPhaseLabel(t *testing.T) {
	mmd, dot := string(Mermaid(phases.Lifecycle())), string(DOT(phases.Lifecycle()))
	for _, s := range phases.Lifecycle().AllStates() {
		text := string(s.Name)
		if s.Label != "" {
			text = s.Label + " " + text
		}
		if want := fmt.Sprintf("state %q as s_%s\n", text, s.Name); !strings.Contains(mmd, want) {
			t.Errorf("Mermaid lacks %q", want)
		}
		if want := fmt.Sprintf("\"s_%s\" [label=%q", s.Name, text); !strings.Contains(dot, want) {
			t.Errorf("DOT lacks %q", want)
		}
	}
	for _, want := range []string{`"3 configuring"`, `"S1 stopping_daemons"`, `"running"`} {
		if !strings.Contains(mmd, want) {
			t.Errorf("Mermaid lacks state text %s", want)
		}
	}
}

func TestEveryTransitionOfTheLifecycleIsAnEdgeFromEachSource(t *testing.T) {
	mmd, dot := string(Mermaid(phases.Lifecycle())), string(DOT(phases.Lifecycle()))
	mEdge := regexp.MustCompile(`(?m)^    (\S+) --> (\S+) : (.+)$`)
	dEdge := regexp.MustCompile(`(?m)^\t"(\S+)" -> "(\S+)" \[(?:ltail="cluster_(\S+)", )?label="(.*)"\];$`)
	mLabels, dLabels := map[string][]string{}, map[string][]string{}
	for _, m := range mEdge.FindAllStringSubmatch(mmd, -1) {
		mLabels[m[1]+" "+m[2]] = strings.Split(m[3], ", ")
	}
	for _, m := range dEdge.FindAllStringSubmatch(dot, -1) {
		from := m[1]
		if m[3] != "" {
			from = m[3] // a group edge: it leaves the cluster
		}
		dLabels[from+" "+m[2]] = strings.Split(m[4], `\n`)
	}
	// A transition is drawn from its source state, or from the source's
	// group when the group edge carries it.
	for _, tr := range phases.Lifecycle().Edges() {
		for _, from := range tr.From {
			si, _ := phases.Lifecycle().State(from)
			key := "s_" + string(from) + " s_" + string(tr.To)
			gkey := "g_" + string(si.Group) + " s_" + string(tr.To)
			if !contains(mLabels[key], tr.Label()) && !contains(mLabels[gkey], tr.Label()) {
				t.Errorf("Mermaid: neither edge %s nor %s has %q", key, gkey, tr.Label())
			}
			if !contains(dLabels[key], tr.Label()) && !contains(dLabels[gkey], tr.Label()) {
				t.Errorf("DOT: neither edge %s nor %s has %q", key, gkey, tr.Label())
			}
			if contains(mLabels[key], tr.Label()) && contains(mLabels[gkey], tr.Label()) {
				t.Errorf("Mermaid draws %q twice: from %s and from its group", tr.Label(), from)
			}
		}
	}
}

// sharedByGroup derives from the table what a group edge must draw: for each
// group of two states or more, the labels that every state of the group has
// on a transition to one destination outside it.
func sharedByGroup(tab *phases.Table) map[string][]string {
	out := map[string][]string{} // "g_<group> s_<to>" -> labels
	for _, g := range tab.Groups {
		var states []phases.State
		for _, s := range tab.States {
			if s.Group == g.Name {
				states = append(states, s.Name)
			}
		}
		if len(states) < 2 {
			continue
		}
		for _, tr := range tab.Edges() {
			has := map[phases.State]bool{}
			for _, f := range tr.From {
				has[f] = true
			}
			all := !slices.Contains(states, tr.To)
			for _, s := range states {
				all = all && has[s]
			}
			if all {
				k := "g_" + string(g.Name) + " s_" + string(tr.To)
				out[k] = append(out[k], tr.Label())
			}
		}
	}
	return out
}

func TestEdgesEveryBootStateHasAreDrawnOnceFromTheBootGroup(t *testing.T) {
	shared := sharedByGroup(phases.Lifecycle())
	want := "g_boot s_" + string(phases.StoppingDaemons)
	if len(shared[want]) == 0 {
		t.Fatalf("the table gives every boot state no common edge to stopping_daemons: %v", shared)
	}
	mmd, dot := string(Mermaid(phases.Lifecycle())), string(DOT(phases.Lifecycle()))
	for key, labels := range shared {
		from, to, _ := strings.Cut(key, " ")
		line := fmt.Sprintf("    %s --> %s : %s\n", from, to, strings.Join(labels, ", "))
		if strings.Count(mmd, line) != 1 {
			t.Errorf("Mermaid lacks, once, the group edge %q:\n%s", line, mmd)
		}
		group := strings.TrimPrefix(from, "g_")
		dline := fmt.Sprintf(`-> "%s" [ltail="cluster_g_%s", label="%s"];`, to, group, strings.Join(labels, `\n`))
		if strings.Count(dot, dline) != 1 {
			t.Errorf("DOT lacks, once, the compound edge %q:\n%s", dline, dot)
		}
	}
	if !strings.Contains(dot, "compound=true") {
		t.Errorf("DOT draws a compound edge without compound=true")
	}
	// No boot state keeps an edge of its own to stopping_daemons: stop and
	// fail were all it had there.
	for _, s := range phases.Lifecycle().StatesIn(phases.GroupBoot) {
		if strings.Contains(mmd, fmt.Sprintf("    s_%s --> s_%s ", s, phases.StoppingDaemons)) {
			t.Errorf("Mermaid still draws %s -> stopping_daemons", s)
		}
		if strings.Contains(dot, fmt.Sprintf("\t\"s_%s\" -> \"s_%s\" [label=", s, phases.StoppingDaemons)) {
			t.Errorf("DOT still draws %s -> stopping_daemons", s)
		}
	}
}

func TestALabelOneStateOfTheGroupLacksStaysOnEachStatesEdge(t *testing.T) {
	tab := phases.Table{
		Name:    "job",
		Initial: "a",
		Groups:  []phases.GroupInfo{{Name: "work"}, {Name: "end"}},
		States: []phases.StateInfo{
			{Name: "a", Group: "work"}, {Name: "b", Group: "work"}, {Name: "c", Group: "work"},
			{Name: "done", Group: "end", Terminal: true},
		},
		Transitions: []phases.Transition{
			{Event: "next", From: []phases.State{"a"}, To: "b"},
			{Event: "next", From: []phases.State{"b"}, To: "c"},
			{Event: "stop", From: []phases.State{"a", "b", "c"}, To: "done"},
			{Event: "fail", From: []phases.State{"a", "c"}, To: "done"}, // b cannot fail
		},
	}
	if err := tab.Validate(); err != nil {
		t.Fatal(err)
	}
	mmd, dot := string(Mermaid(&tab)), string(DOT(&tab))
	for _, want := range []string{
		"    g_work --> s_done : stop\n",
		"    s_a --> s_done : fail\n",
		"    s_c --> s_done : fail\n",
	} {
		if !strings.Contains(mmd, want) {
			t.Errorf("Mermaid lacks %q:\n%s", want, mmd)
		}
	}
	if strings.Contains(mmd, "s_b --> s_done") {
		t.Errorf("Mermaid draws b -> done, but b's only edge there is the group's stop:\n%s", mmd)
	}
	for _, want := range []string{
		`"s_c" -> "s_done" [ltail="cluster_g_work", label="stop"];`,
		`"s_a" -> "s_done" [label="fail"];`,
	} {
		if !strings.Contains(dot, want) {
			t.Errorf("DOT lacks %q:\n%s", want, dot)
		}
	}
}

func TestGuardedEdgesShowEventAndGuard(t *testing.T) {
	mmd := string(Mermaid(phases.Lifecycle()))
	for _, want := range []string{
		"s_connecting --> s_failed : ping_failed [redis_required]\n",
		"ping_failed [not redis_required]\n",
		"s_cleaning_up --> s_failed : cleaned_up [failing]\n",
		"s_cleaning_up --> s_stopped : cleaned_up [not failing]\n",
	} {
		if !strings.Contains(mmd, want) {
			t.Errorf("Mermaid lacks %q", want)
		}
	}
	dot := string(DOT(phases.Lifecycle()))
	for _, want := range []string{`[label="ping_failed [redis_required]"]`, `ping_failed [not redis_required]"]`, `[label="cleaned_up [failing]"]`} {
		if !strings.Contains(dot, want) {
			t.Errorf("DOT lacks %q", want)
		}
	}
}

func TestParallelEdgesMergeIntoOneLabel(t *testing.T) {
	mmd := string(Mermaid(phases.Lifecycle()))
	if want := "s_running --> s_stopping_daemons : restart [not drain_delay], stop [not drain_delay], fail\n"; !strings.Contains(mmd, want) {
		t.Errorf("Mermaid lacks merged edge %q", want)
	}
	if n := strings.Count(mmd, "s_running --> s_stopping_daemons"); n != 1 {
		t.Errorf("Mermaid draws %d edges running -> stopping_daemons, want 1", n)
	}
	if want := "s_running --> s_draining : drain, restart [drain_delay], stop [drain_delay]\n"; !strings.Contains(mmd, want) {
		t.Errorf("Mermaid lacks merged edge %q", want)
	}
	// stop and fail leave every control state: drawn once, from the group.
	if want := "g_control --> s_stopping_daemons : stop, fail\n"; !strings.Contains(mmd, want) {
		t.Errorf("Mermaid lacks the group edge %q", want)
	}
	if want := `"s_running" -> "s_stopping_daemons" [label="restart [not drain_delay]\nstop [not drain_delay]\nfail"];`; !strings.Contains(string(DOT(phases.Lifecycle())), want) {
		t.Errorf("DOT lacks merged edge %s", want)
	}
}

func TestStartLeadsToInitialEvenWhenAnotherStateIsHighlighted(t *testing.T) {
	mmd := string(Mermaid(phases.Lifecycle(), Highlight(phases.Running)))
	starts := regexp.MustCompile(`(?m)^    \[\*\] --> (\S+)$`).FindAllStringSubmatch(mmd, -1)
	if len(starts) != 1 || starts[0][1] != "s_init" {
		t.Errorf("Mermaid start edges = %q, want one to s_init", starts)
	}
	if !strings.Contains(mmd, "    class s_running current\n") || !strings.Contains(mmd, "classDef current ") {
		t.Errorf("Mermaid does not mark running as current:\n%s", mmd)
	}
	dot := string(DOT(phases.Lifecycle(), Highlight(phases.Running)))
	if !strings.Contains(dot, "\t\"start\" -> \"s_init\";\n") || strings.Count(dot, "\"start\" ->") != 1 {
		t.Errorf("DOT start edge does not lead to init alone:\n%s", dot)
	}
	if !regexp.MustCompile(`"s_running" \[label="running"[^\n]*fillcolor`).MatchString(dot) {
		t.Errorf("DOT does not fill running:\n%s", dot)
	}
	if regexp.MustCompile(`"s_init" \[[^\n]*fillcolor`).MatchString(dot) {
		t.Errorf("DOT fills init, which is not highlighted")
	}
}

func TestHighlightOfAnUnknownStateMarksNothing(t *testing.T) {
	plain := Mermaid(phases.Lifecycle())
	for _, s := range []phases.State{"", "no_such_state"} {
		if got := Mermaid(phases.Lifecycle(), Highlight(s)); !bytes.Equal(got, plain) {
			t.Errorf("Highlight(%q) changed the Mermaid output:\n%s", s, got)
		}
	}
}

func TestTerminalStatesLeadToTheEnd(t *testing.T) {
	mmd := string(Mermaid(phases.Lifecycle()))
	ends := regexp.MustCompile(`(?m)^    (\S+) --> \[\*\]$`).FindAllStringSubmatch(mmd, -1)
	var got []string
	for _, e := range ends {
		got = append(got, e[1])
	}
	if strings.Join(got, " ") != "s_stopped s_failed" {
		t.Errorf("Mermaid end edges from %q, want s_stopped s_failed", got)
	}
}

func TestStatesAreDrawnInTheirGroupsInTableOrder(t *testing.T) {
	mmd := string(Mermaid(phases.Lifecycle()))
	var order []string
	group := ""
	for _, line := range strings.Split(mmd, "\n") {
		if m := regexp.MustCompile(`^    state "(.*)" as g_\S+ \{$`).FindStringSubmatch(line); m != nil {
			group = m[1]
			order = append(order, "["+group+"]")
			continue
		}
		if line == "    }" {
			group = ""
			continue
		}
		if m := regexp.MustCompile(`^        state ".*" as s_(\S+)$`).FindStringSubmatch(line); m != nil {
			si, _ := phases.Lifecycle().State(phases.State(m[1]))
			if string(si.Group) != group {
				t.Errorf("state %s drawn in group %q, belongs to %q", m[1], group, si.Group)
			}
			order = append(order, m[1])
		}
	}
	var want []string
	for _, g := range phases.Lifecycle().Groups {
		want = append(want, "["+string(g.Name)+"]")
		for _, s := range phases.Lifecycle().States {
			if s.Group == g.Name {
				want = append(want, string(s.Name))
			}
		}
	}
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Errorf("drawing order\n%q\nwant\n%q", order, want)
	}
}

// awkward is a valid table whose names would break Mermaid if used raw.
var awkward = phases.Table{
	Name:    `odd "machine"`,
	Initial: "my state",
	Groups: []phases.GroupInfo{
		{Name: "the end", Doc: "a group named like a keyword"},
		{Name: "state", Doc: "another"},
	},
	States: []phases.StateInfo{
		{Name: "my state", Label: "1", Group: "the end", Doc: `has a "quote"`},
		{Name: "pre-stop", Group: "the end"},
		{Name: "end", Group: "state"},
		{Name: "state", Group: "state"},
		{Name: `say "hi"`, Group: "state"},
		{Name: "a:b;c", Group: "state"},
		{Name: "x<y>#1;", Group: "state"},
		{Name: "a b", Group: "state"},
		{Name: "a-b", Group: "state"},
		{Name: "日本", Group: "state"},
		{Name: `back\slash`, Group: "state", Terminal: true},
	},
	Guards: []phases.GuardInfo{{Name: "is:odd", Doc: "a guard with a colon"}},
	Transitions: []phases.Transition{
		{Event: "go: now", From: []phases.State{"my state"}, To: "pre-stop"},
		{Event: "end", From: []phases.State{"pre-stop", "end"}, To: "state"},
		{Event: "say;it", From: []phases.State{"state"}, To: `say "hi"`, Guard: phases.Guard{Name: "is:odd"}},
		{Event: "say;it", From: []phases.State{"state"}, To: "a:b;c", Guard: phases.Guard{Name: "is:odd", Not: true}},
		{Event: "x", From: []phases.State{`say "hi"`, "a:b;c"}, To: "x<y>#1;"},
		{Event: "y", From: []phases.State{"x<y>#1;"}, To: "a b"},
		{Event: "z", From: []phases.State{"a b"}, To: "a-b"},
		{Event: "z", From: []phases.State{"a-b"}, To: "日本"},
		{Event: "done", From: []phases.State{"日本"}, To: `back\slash`},
	},
}

// mermaidLine lists every line shape Mermaid emits; a line matching none of them
// is a syntax error waiting to happen.
var (
	mmdID       = `[A-Za-z_][A-Za-z0-9_]*`
	mmdText     = `(?:[^"#:;<>\n]|#\w+;)*` // no raw quote, colon, semicolon, angle or stray '#'
	mmdDecl     = regexp.MustCompile(`^ {4}(?: {4})?state "(` + mmdText + `)" as (` + mmdID + `)( \{)?$`)
	mmdEdge     = regexp.MustCompile(`^    (\[\*\]|` + mmdID + `) --> (\[\*\]|` + mmdID + `)(?: : (` + mmdText + `))?$`)
	mmdOther    = regexp.MustCompile(`^(?:---|title: ".*"|stateDiagram-v2|    \}|    classDef current [^;\n]+|    class ` + mmdID + ` current|)$`)
	mmdEntities = regexp.MustCompile(`#(\w+);`)
)

func decodeMermaid(s string) string {
	return mmdEntities.ReplaceAllStringFunc(s, func(e string) string {
		name := e[1 : len(e)-1]
		switch name {
		case "quot":
			return `"`
		case "lt":
			return "<"
		case "gt":
			return ">"
		}
		n, err := strconv.Atoi(name)
		if err != nil {
			return e
		}
		return string(rune(n))
	})
}

func TestAwkwardNamesRenderToValidMermaid(t *testing.T) {
	if err := awkward.Validate(); err != nil {
		t.Fatalf("test table is invalid: %v", err)
	}
	mmd := string(Mermaid(&awkward, Highlight("end")))
	declared := map[string]string{} // id -> decoded text
	for i, line := range strings.Split(mmd, "\n") {
		switch {
		case mmdDecl.MatchString(line):
			m := mmdDecl.FindStringSubmatch(line)
			if _, dup := declared[m[2]]; dup {
				t.Errorf("line %d: id %s declared twice", i+1, m[2])
			}
			declared[m[2]] = decodeMermaid(m[1])
		case mmdEdge.MatchString(line):
			m := mmdEdge.FindStringSubmatch(line)
			for _, id := range m[1:3] {
				if _, ok := declared[id]; !ok && id != "[*]" {
					t.Errorf("line %d: edge uses undeclared id %s: %q", i+1, id, line)
				}
			}
		case mmdOther.MatchString(line):
		default:
			t.Errorf("line %d is not valid Mermaid: %q", i+1, line)
		}
	}
	for _, s := range awkward.States {
		found := false
		for _, text := range declared {
			if text == string(s.Name) || text == s.Label+" "+string(s.Name) {
				found = true
			}
		}
		if !found {
			t.Errorf("state %q is not declared with its own name as text; declared %q", s.Name, declared)
		}
	}
	for _, want := range []string{"go#58; now", "say#59;it [is#58;odd]", "say#59;it [not is#58;odd]", "class s_end current"} {
		if !strings.Contains(mmd, want) {
			t.Errorf("Mermaid lacks %q:\n%s", want, mmd)
		}
	}
	if !strings.Contains(mmd, "as s_a_b\n") || !strings.Contains(mmd, "as s_a_b_2\n") {
		t.Errorf("colliding ids for %q and %q are not made distinct:\n%s", "a b", "a-b", mmd)
	}
}

func TestDotAcceptsTheDOTOutput(t *testing.T) {
	requireDot(t)
	for name, tab := range map[string]*phases.Table{"lifecycle": phases.Lifecycle(), "awkward": &awkward} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		svg, err := SVG(ctx, DOT(tab, Highlight(tab.Initial)))
		cancel()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Contains(svg, []byte("<svg")) {
			t.Errorf("%s: dot output is not SVG: %.200s", name, svg)
		}
		for _, s := range tab.States {
			if !bytes.Contains(svg, []byte(">"+xmlEscape(string(s.Name))+"<")) && !bytes.Contains(svg, []byte(" "+xmlEscape(string(s.Name))+"<")) {
				t.Errorf("%s: SVG lacks state %q", name, s.Name)
			}
		}
	}
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "-", "&#45;").Replace(s)
}

func TestStatesOfATableWithoutGroupsAreDrawnAtTheTopLevel(t *testing.T) {
	tab := phases.Table{
		Name:    "door",
		Initial: "closed",
		States:  []phases.StateInfo{{Name: "closed"}, {Name: "open"}},
		Transitions: []phases.Transition{
			{Event: "open", From: []phases.State{"closed"}, To: "open"},
			{Event: "close", From: []phases.State{"open"}, To: "closed"},
		},
	}
	mmd := string(Mermaid(&tab))
	if strings.Contains(mmd, "{") {
		t.Errorf("Mermaid draws a composite state for a table without groups:\n%s", mmd)
	}
	for _, want := range []string{"\n    state \"closed\" as s_closed\n", "\n    state \"open\" as s_open\n", "\n    s_open --> s_closed : close\n"} {
		if !strings.Contains(mmd, want) {
			t.Errorf("Mermaid lacks %q:\n%s", want, mmd)
		}
	}
	if strings.Contains(mmd, "--> [*]") {
		t.Errorf("Mermaid draws an end for a table without terminal states:\n%s", mmd)
	}
	if dot := string(DOT(&tab)); strings.Contains(dot, "subgraph") || strings.Contains(dot, `"end"`) {
		t.Errorf("DOT draws a cluster or an end marker it should not:\n%s", dot)
	}
}

// The diagrams follow a table grown by the recipe of docs/architecture.md
// with no edit: a boot phase takes its number and renumbers the ones after
// it, stays inside the boot group's fold of stop and fail, and a control
// state sits in its group, left by the control group's stop and fail.
func TestAGrownTableIsDrawnWithNoEdit(t *testing.T) {
	g := tabletest.Grown()
	mmd, dot, md := string(Mermaid(g)), string(DOT(g)), string(Markdown(g))
	for _, want := range []string{
		`state "7 warming_up" as s_warming_up`, `state "8 starting" as s_starting`, `state "10 serving_health" as s_serving_health`,
		`state "pausing" as s_pausing`,
		"s_building_adapters --> s_warming_up : adapters_built", "s_warming_up --> s_starting : warmed",
		"s_running --> s_pausing : pause", "s_pausing --> s_running : resume",
		"g_boot --> s_stopping_daemons : stop, fail", "g_control --> s_stopping_daemons : stop, fail",
	} {
		if !strings.Contains(mmd, want) {
			t.Errorf("Mermaid lacks %q", want)
		}
	}
	if strings.Contains(mmd, "s_warming_up --> s_stopping_daemons") || strings.Contains(mmd, "s_pausing --> s_stopping_daemons") {
		t.Error("a new state's stop and fail are drawn on their own, not folded into its group's")
	}
	if !strings.Contains(dot, `"s_warming_up" [label="7 warming_up"`) {
		t.Error("DOT lacks warming_up as phase 7")
	}
	if !strings.Contains(md, "| 7 | `warming_up` | boot | working |") || !strings.Contains(md, "|  | `pausing` | control | draining |") {
		t.Errorf("the legend lacks the new states with their labels and roles:\n%s", md)
	}
}
