// Package diagrams draws a phases.Table as a state diagram, so the pictures in the
// docs come from the same table that drives the machine and cannot drift from it.
//
// Mermaid and DOT render any table, not only phases.Lifecycle. The output is
// deterministic byte for byte: it depends only on the table and the options, in
// table order, never on map iteration or the clock. SVG hands DOT output to the
// Graphviz dot binary. Handler serves the diagram of a live machine with its
// current state highlighted, for a health or debug server. Markdown renders the
// diagram with its legend (groups, guards, states, transitions).
//
// How a table is drawn:
//
//   - every state is a node labelled "<label> <state>" when it has a phase label
//     ("3 configuring", "S1 stopping_daemons") and "<state>" otherwise;
//   - states are drawn inside their group (Mermaid composite state, DOT cluster),
//     groups in the order of Table.Groups and states in the order of
//     Table.States; states of no declared group are drawn outside any group;
//   - the start marker leads to Table.Initial, whatever state is highlighted, and
//     every Terminal state leads to the end marker;
//   - a transition with several sources is one edge per source; transitions
//     between the same pair of states share one edge whose label lists them all,
//     in table order ("stop, fail" in Mermaid, one per line in DOT), each as
//     phases.Transition.Label renders it: "event" or "event [guard]";
//   - a label that every state of a group (of two states or more) has on its
//     edge to one state outside the group is drawn once, from the group: the
//     lifecycle's stop and fail, which every boot state has, are one arrow
//     from the boot group to stopping_daemons (a Mermaid transition from the
//     composite state; in DOT an edge from the group's last state with
//     ltail set to its cluster, under compound=true). This is read off the
//     table, never named: a label that one state of the group lacks stays on
//     each state's own edge;
//   - DOT group titles sit in the top-left corner of their cluster, clear of
//     the edges that enter it, and no edge label overlaps one (a test measures
//     the rendered SVG).
//
// Mermaid never sees a state name as an identifier: states are aliased
// (state "label" as s_id) with ids made of [A-Za-z0-9_] only, so names with
// spaces, dashes, quotes or Mermaid keywords ("end", "state") stay valid.
// All edges are written at the top level, after every state has been declared
// inside its group: Mermaid puts a state in the last composite that mentions it,
// so declaring once and linking outside keeps each state in its own group.
//
// go generate ./diagrams (or go generate ./...) writes lifecycle.mmd,
// lifecycle.dot, lifecycle.svg and README.md from phases.Lifecycle; a test fails
// when the committed files differ from what the table produces.
package diagrams

//go:generate go run ./gen
