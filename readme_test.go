package lifecycle

import (
	"os"
	"testing"

	"github.com/stargazer/lifecycle/diagrams"
	"github.com/stargazer/lifecycle/phases"
)

func TestReadmeShowsTheGeneratedDiagram(t *testing.T) {
	doc, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	want, err := diagrams.Embed(doc, diagrams.Mermaid(phases.Lifecycle()))
	if err != nil {
		t.Fatal(err)
	}
	if string(doc) != string(want) {
		t.Fatal("README.md shows a stale state diagram; run: go generate ./diagrams")
	}
}
