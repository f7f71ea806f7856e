package diagrams

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/phases"
)

// The committed diagrams are what `go generate ./diagrams` writes; these tests
// fail when someone edits the table (or this package) without regenerating.

func TestCommittedDiagramsMatchTheLifecycleTable(t *testing.T) {
	tab := phases.Lifecycle()
	for name, want := range map[string][]byte{
		tab.Name + ".mmd": Mermaid(tab),
		tab.Name + ".dot": DOT(tab),
		"README.md":       Markdown(tab),
	} {
		checkCommitted(t, name, want)
	}
}

func TestCommittedSVGMatchesTheLifecycleTable(t *testing.T) {
	requireDot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svg, err := SVG(ctx, DOT(phases.Lifecycle()))
	if err != nil {
		t.Fatal(err)
	}
	checkCommitted(t, phases.Lifecycle().Name+".svg", svg)
}

func checkCommitted(t *testing.T, name string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(name)
	if err != nil {
		t.Errorf("diagrams/%s: %v; run: go generate ./diagrams", name, err)
		return
	}
	if bytes.Equal(got, want) {
		return
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
	i := 0
	for i < len(gl) && i < len(wl) && gl[i] == wl[i] {
		i++
	}
	line := func(l []string) string {
		if i < len(l) {
			return l[i]
		}
		return "<end of file>"
	}
	t.Errorf("diagrams/%s is out of date with the phases table; run: go generate ./diagrams\n"+
		"first difference at line %d:\n  committed: %q\n  generated: %q", name, i+1, line(gl), line(wl))
}
