package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stargazer/lifecycle/diagrams"
	"github.com/stargazer/lifecycle/internal/tabletest"
	"github.com/stargazer/lifecycle/phases"
)

func TestDiagramPrintsTheLifecycleTableInEachTextFormat(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []byte
	}{
		{[]string{"diagram"}, diagrams.Mermaid(phases.Lifecycle())},
		{[]string{"diagram", "--format", "mermaid"}, diagrams.Mermaid(phases.Lifecycle())},
		{[]string{"diagram", "--format=dot"}, diagrams.DOT(phases.Lifecycle())},
		{[]string{"diagram", "--format", "dot", "--highlight", "pulling"}, diagrams.DOT(phases.Lifecycle(), diagrams.Highlight(phases.Pulling))},
	} {
		r := sgctl(t, t.Context(), nil, nil, tc.args...)
		if r.code != exitOK || r.stdout != string(tc.want) {
			t.Errorf("%q: exit %d, output differs from package diagrams' (%d bytes, want %d)", tc.args, r.code, len(r.stdout), len(tc.want))
		}
	}
}

func TestDiagramNeedsNoRedis(t *testing.T) {
	r := sgctl(t, t.Context(), map[string]string{"REDIS_URL": "redis://127.0.0.1:1"}, nil, "diagram")
	if r.code != exitOK {
		t.Fatalf("exit code %d, want 0 without touching Redis", r.code)
	}
}

func TestDiagramSVGIsRenderedByGraphviz(t *testing.T) {
	r := sgctl(t, t.Context(), nil, nil, "diagram", "--format", "svg", "--highlight", "running")
	if _, err := exec.LookPath("dot"); err != nil {
		// Without dot the command fails, saying what to install.
		if r.code != exitFailed || !strings.Contains(r.stderr, "graphviz") {
			t.Fatalf("without dot: got %d %q, want exit 1 naming graphviz", r.code, r.stderr)
		}
		return
	}
	want, err := diagrams.SVG(t.Context(), diagrams.DOT(phases.Lifecycle(), diagrams.Highlight(phases.Running)))
	if err != nil {
		t.Fatal(err)
	}
	if r.code != exitOK || !strings.Contains(r.stdout, "<svg") || r.stdout != string(want) {
		t.Fatalf("exit %d, output is not the package's SVG (%d bytes, want %d)", r.code, len(r.stdout), len(want))
	}
}

// sgctl draws a table grown by the recipe of docs/architecture.md with no
// edit: the new states are drawn, and accepted as the state to highlight.
func TestDiagramFollowsAGrownTable(t *testing.T) {
	var stdout, stderr syncBuffer
	a := newTestApp(nil, nil, &stdout, &stderr)
	a.table = tabletest.Grown()
	if code := a.main(t.Context(), []string{"diagram", "--highlight", string(tabletest.Pausing)}); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{`state "7 warming_up" as s_warming_up`, `state "8 starting" as s_starting`, `state "pausing" as s_pausing`, "s_running --> s_pausing : pause"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("the diagram lacks %q:\n%s", want, stdout.String())
		}
	}
}
