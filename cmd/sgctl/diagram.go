package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/stargazer/lifecycle/diagrams"
	"github.com/stargazer/lifecycle/phases"
)

var diagramCommand = &command{
	name:    "diagram",
	summary: "Print the lifecycle state diagram (Mermaid, DOT or SVG)",
	usage:   "diagram [--format mermaid|dot|svg] [--highlight STATE]",
	help: `Prints the diagram of the lifecycle transition table (package phases), the
same table that drives every service's state machine, so it cannot drift
from what the services do. It needs no Redis.

  sgctl diagram > lifecycle.mmd
  sgctl diagram --format svg --highlight running > lifecycle.svg

SVG is rendered by Graphviz: the dot binary must be on PATH (apt-get install
-y graphviz); without it sgctl exits 1 and says so.`,
	flags: func(fs *flag.FlagSet, a *app) func(context.Context, []string) int {
		format := fs.String("format", "mermaid", "output `format`: mermaid, dot or svg")
		highlight := fs.String("highlight", "", "mark this `STATE` (e.g. running) as the current one")
		return func(ctx context.Context, args []string) int {
			return a.diagram(ctx, args, *format, *highlight)
		}
	},
}

func (a *app) diagram(ctx context.Context, args []string, format, highlight string) int {
	if len(args) > 0 {
		return a.usageError("unexpected arguments %q", args)
	}
	var opts []diagrams.Option
	if highlight != "" {
		if _, ok := a.table.State(phases.State(highlight)); !ok {
			names := make([]string, len(a.table.States))
			for i, s := range a.table.States {
				names[i] = string(s.Name)
			}
			return a.usageError("invalid value %q for flag --highlight: want one of %s", highlight, strings.Join(names, ", "))
		}
		opts = append(opts, diagrams.Highlight(phases.State(highlight)))
	}
	var out []byte
	switch format {
	case "mermaid", "mmd":
		out = diagrams.Mermaid(a.table, opts...)
	case "dot", "graphviz":
		out = diagrams.DOT(a.table, opts...)
	case "svg":
		var err error
		out, err = diagrams.SVG(ctx, diagrams.DOT(a.table, opts...))
		if err != nil {
			// ErrNoGraphviz's message says how to install dot.
			fmt.Fprintf(a.stderr, "sgctl diagram: %v\n", err)
			return exitFailed
		}
	default:
		return a.usageError("invalid value %q for flag --format: want mermaid, dot or svg", format)
	}
	if _, err := a.stdout.Write(out); err != nil {
		fmt.Fprintf(a.stderr, "sgctl diagram: writing output: %v\n", err)
		return exitFailed
	}
	return exitOK
}
