package diagrams

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/stargazer/lifecycle/phases"
)

// Option changes how a diagram is drawn.
type Option interface {
	apply(*config)
}

type config struct {
	highlight phases.State
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// Highlight marks state as the current one: Mermaid gives it the class "current",
// DOT fills it. A state the table does not declare is ignored, and so is "".
// The start marker still leads to the table's initial state.
func Highlight(state phases.State) Option {
	return optionFunc(func(c *config) { c.highlight = state })
}

// model is a table laid out for drawing: safe ids, states per group, merged edges.
type model struct {
	name      string
	initial   phases.State
	ids       map[phases.State]string
	groups    []groupNodes
	loose     []phases.StateInfo // states of no declared group
	edges     []edge
	terminals []phases.State
	highlight phases.State // "" when none or unknown
}

type groupNodes struct {
	info   phases.GroupInfo
	id     string
	states []phases.StateInfo
}

// edge is one arrow. A group edge (group != "") stands for the transitions
// that every state of a group has to the same destination with the same
// label: it is drawn once, from the group's border (DOT: from its last state,
// clipped with ltail; Mermaid: from the composite state), and those labels
// are taken off the states' own edges.
type edge struct {
	from, to phases.State
	labels   []string
	group    *groupNodes // set on a group edge; from is then the group's last state
}

func newModel(t *phases.Table, opts []Option) *model {
	var c config
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	m := &model{name: t.Name, initial: t.Initial, ids: map[phases.State]string{}}

	// Every state gets an id: the declared ones in table order, then any state a
	// transition or the initial state mentions without declaring it, so even an
	// invalid table draws.
	states := t.AllStates()
	declared := map[phases.State]bool{}
	for _, s := range states {
		declared[s.Name] = true
	}
	addUndeclared := func(s phases.State) {
		if s != "" && !declared[s] {
			declared[s] = true
			states = append(states, phases.StateInfo{Name: s})
		}
	}
	addUndeclared(t.Initial)
	for _, tr := range t.Edges() {
		for _, f := range tr.From {
			addUndeclared(f)
		}
		addUndeclared(tr.To)
	}
	used := map[string]bool{}
	for _, s := range states {
		if _, dup := m.ids[s.Name]; !dup {
			m.ids[s.Name] = uniqueID("s_", string(s.Name), used)
		}
	}

	groupUsed := map[string]bool{}
	inGroup := map[phases.Group]int{}
	for _, g := range t.Groups {
		if _, dup := inGroup[g.Name]; dup {
			continue
		}
		inGroup[g.Name] = len(m.groups)
		m.groups = append(m.groups, groupNodes{info: g, id: uniqueID("g_", string(g.Name), groupUsed)})
	}
	placed := map[phases.State]bool{}
	for _, s := range states {
		if placed[s.Name] {
			continue
		}
		placed[s.Name] = true
		if i, ok := inGroup[s.Group]; ok {
			m.groups[i].states = append(m.groups[i].states, s)
		} else {
			m.loose = append(m.loose, s)
		}
		if s.Terminal {
			m.terminals = append(m.terminals, s.Name)
		}
	}

	type pair struct{ from, to phases.State }
	at := map[pair]int{}
	for _, tr := range t.Edges() {
		label := tr.Label()
		for _, f := range tr.From {
			p := pair{f, tr.To}
			i, ok := at[p]
			if !ok {
				i = len(m.edges)
				at[p] = i
				m.edges = append(m.edges, edge{from: f, to: tr.To})
			}
			if !contains(m.edges[i].labels, label) {
				m.edges[i].labels = append(m.edges[i].labels, label)
			}
		}
	}

	m.edges = groupEdges(m.groups, m.edges)

	if _, ok := m.ids[c.highlight]; ok {
		m.highlight = c.highlight
	}
	return m
}

// groupEdges folds, for each group of two states or more, the labels that
// every state of the group has on its edge to one destination outside the
// group into one group edge, placed where the first of those edges was. It
// reads only the edges (that is, the table): a label that one state of the
// group lacks stays on each state's own edge. Edges left without labels are
// dropped.
func groupEdges(groups []groupNodes, edges []edge) []edge {
	type pair struct{ from, to phases.State }
	at := map[pair]int{}
	for i, e := range edges {
		at[pair{e.from, e.to}] = i
	}
	folded := map[int][]edge{} // index of an edge -> group edges to draw before it
	drop := map[int][]string{} // index of an edge -> labels taken off it
	for gi := range groups {
		g := &groups[gi]
		if len(g.states) < 2 {
			continue
		}
		in := map[phases.State]bool{}
		for _, s := range g.states {
			in[s.Name] = true
		}
		// Destinations in the order the group's first state reaches them.
		first := g.states[0].Name
		for _, e := range edges {
			if e.from != first || in[e.to] {
				continue
			}
			var common []string
			firstAt := len(edges)
			for _, label := range e.labels {
				everywhere := true
				for _, s := range g.states {
					i, ok := at[pair{s.Name, e.to}]
					if !ok || !contains(edges[i].labels, label) {
						everywhere = false
						break
					}
				}
				if everywhere {
					common = append(common, label)
				}
			}
			if len(common) == 0 {
				continue
			}
			for _, s := range g.states {
				i := at[pair{s.Name, e.to}]
				firstAt = min(firstAt, i)
				drop[i] = append(drop[i], common...)
			}
			last := g.states[len(g.states)-1].Name
			folded[firstAt] = append(folded[firstAt], edge{from: last, to: e.to, labels: common, group: g})
		}
	}
	if len(folded) == 0 {
		return edges
	}
	var out []edge
	for i, e := range edges {
		out = append(out, folded[i]...)
		if d := drop[i]; len(d) > 0 {
			var keep []string
			for _, l := range e.labels {
				if !contains(d, l) {
					keep = append(keep, l)
				}
			}
			if len(keep) == 0 {
				continue
			}
			e.labels = keep
		}
		out = append(out, e)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// uniqueID turns name into prefix+[A-Za-z0-9_]+, adding _2, _3... when two names
// collapse to the same id.
func uniqueID(prefix, name string, used map[string]bool) string {
	var b strings.Builder
	b.WriteString(prefix)
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	id := b.String()
	for n := 2; used[id]; n++ {
		id = b.String() + "_" + strconv.Itoa(n)
	}
	used[id] = true
	return id
}

// display is the text a state's node shows: "3 configuring" or "running".
func display(s phases.StateInfo) string {
	if s.Label != "" {
		return s.Label + " " + string(s.Name)
	}
	return string(s.Name)
}

// Mermaid renders t as a Mermaid stateDiagram-v2, with t.Name as its title. See
// the package documentation for how the table is drawn.
func Mermaid(t *phases.Table, opts ...Option) []byte {
	m := newModel(t, opts)
	var b bytes.Buffer
	if m.name != "" {
		fmt.Fprintf(&b, "---\ntitle: %s\n---\n", strconv.Quote(m.name))
	}
	b.WriteString("stateDiagram-v2\n")
	if m.highlight != "" {
		b.WriteString("    classDef current fill:#ffd54f,stroke:#e65100,stroke-width:3px,font-weight:bold\n")
	}
	for _, g := range m.groups {
		if len(g.states) == 0 {
			continue
		}
		fmt.Fprintf(&b, "    state \"%s\" as %s {\n", mermaidText(string(g.info.Name)), g.id)
		for _, s := range g.states {
			fmt.Fprintf(&b, "        state \"%s\" as %s\n", mermaidText(display(s)), m.ids[s.Name])
		}
		b.WriteString("    }\n")
	}
	for _, s := range m.loose {
		fmt.Fprintf(&b, "    state \"%s\" as %s\n", mermaidText(display(s)), m.ids[s.Name])
	}
	if m.initial != "" {
		fmt.Fprintf(&b, "    [*] --> %s\n", m.ids[m.initial])
	}
	for _, e := range m.edges {
		from := m.ids[e.from]
		if e.group != nil {
			from = e.group.id
		}
		fmt.Fprintf(&b, "    %s --> %s : %s\n", from, m.ids[e.to], mermaidText(strings.Join(e.labels, ", ")))
	}
	for _, s := range m.terminals {
		fmt.Fprintf(&b, "    %s --> [*]\n", m.ids[s])
	}
	if m.highlight != "" {
		fmt.Fprintf(&b, "    class %s current\n", m.ids[m.highlight])
	}
	return b.Bytes()
}

// mermaidText escapes text for a quoted state description or an edge label.
// Mermaid decodes #name; and #code; entities in all text, which is how a quote,
// a colon or a semicolon (which would end the label) gets through. '#' itself is
// escaped first so a name cannot smuggle an entity in.
var mermaidText = strings.NewReplacer(
	"#", "#35;",
	`"`, "#quot;",
	":", "#58;",
	";", "#59;",
	"<", "#lt;",
	">", "#gt;",
	"\r\n", " ",
	"\n", " ",
	"\r", " ",
).Replace

// DOT renders t as a Graphviz digraph, with t.Name as its label and each state's
// Doc as its tooltip. See the package documentation for how the table is drawn.
func DOT(t *phases.Table, opts ...Option) []byte {
	m := newModel(t, opts)
	docs := map[phases.State]string{}
	for _, s := range t.States {
		if _, ok := docs[s.Name]; !ok {
			docs[s.Name] = s.Doc
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "digraph %s {\n", dotQuote(m.name))
	compound := ""
	for _, e := range m.edges {
		if e.group != nil {
			compound = ", compound=true" // lets a group edge start at the cluster's border (ltail)
			break
		}
	}
	fmt.Fprintf(&b, "\tgraph [label=%s, labelloc=t, fontname=\"Helvetica\", rankdir=TB%s];\n", dotQuote(m.name), compound)
	b.WriteString("\tnode [shape=box, style=rounded, fontname=\"Helvetica\", fontsize=11];\n")
	b.WriteString("\tedge [fontname=\"Helvetica\", fontsize=9];\n")
	if m.initial != "" {
		b.WriteString("\t\"start\" [shape=circle, style=filled, fillcolor=black, label=\"\", width=0.2, height=0.2, fixedsize=true];\n")
	}
	if len(m.terminals) > 0 {
		b.WriteString("\t\"end\" [shape=doublecircle, style=filled, fillcolor=black, label=\"\", width=0.15, height=0.15, fixedsize=true];\n")
	}
	node := func(indent string, s phases.StateInfo) {
		fmt.Fprintf(&b, "%s%s [label=%s", indent, dotQuote(m.ids[s.Name]), dotQuote(display(s)))
		if d := docs[s.Name]; d != "" {
			fmt.Fprintf(&b, ", tooltip=%s", dotQuote(d))
		}
		if s.Name == m.highlight {
			b.WriteString(", style=\"rounded,filled,bold\", fillcolor=\"#ffd54f\", color=\"#e65100\", penwidth=2")
		}
		b.WriteString("];\n")
	}
	for _, g := range m.groups {
		if len(g.states) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\tsubgraph %s {\n", dotQuote("cluster_"+g.id))
		fmt.Fprintf(&b, "\t\tlabel=%s;\n", dotQuote(string(g.info.Name)))
		if g.info.Doc != "" {
			fmt.Fprintf(&b, "\t\ttooltip=%s;\n", dotQuote(g.info.Doc))
		}
		// The title sits in the top-left corner, clear of the edges that
		// enter the cluster from above, near its middle.
		b.WriteString("\t\tstyle=\"rounded,dashed\";\n\t\tcolor=gray50;\n\t\tlabeljust=l;\n")
		for _, s := range g.states {
			node("\t\t", s)
		}
		b.WriteString("\t}\n")
	}
	for _, s := range m.loose {
		node("\t", s)
	}
	if m.initial != "" {
		fmt.Fprintf(&b, "\t\"start\" -> %s;\n", dotQuote(m.ids[m.initial]))
	}
	for _, e := range m.edges {
		ltail := ""
		if e.group != nil {
			ltail = "ltail=" + dotQuote("cluster_"+e.group.id) + ", "
		}
		fmt.Fprintf(&b, "\t%s -> %s [%slabel=%s];\n", dotQuote(m.ids[e.from]), dotQuote(m.ids[e.to]), ltail, dotQuote(strings.Join(e.labels, "\n")))
	}
	for _, s := range m.terminals {
		fmt.Fprintf(&b, "\t%s -> \"end\";\n", dotQuote(m.ids[s]))
	}
	b.WriteString("}\n")
	return b.Bytes()
}

// dotQuote renders s as a DOT double-quoted string. Backslashes are doubled so
// Graphviz does not read escapes such as \N or \l in a name; newlines become \n,
// a centred line break.
func dotQuote(s string) string {
	return `"` + dotEscaper.Replace(s) + `"`
}

var dotEscaper = strings.NewReplacer(
	`\`, `\\`,
	`"`, `\"`,
	"\r\n", `\n`,
	"\n", `\n`,
	"\r", `\n`,
)
