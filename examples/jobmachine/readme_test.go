package jobmachine_test

import (
	"os"
	"strings"
	"testing"

	"github.com/stargazer/lifecycle/diagrams"
	"github.com/stargazer/lifecycle/examples/jobmachine"
)

func TestReadmeShowsTheDiagramOfTheTable(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	want := "```mermaid\n" + string(diagrams.Mermaid(&jobmachine.Table)) + "```\n"
	if !strings.Contains(string(b), want) {
		t.Fatalf("examples/jobmachine/README.md does not show the diagram of jobmachine.Table; paste this into it:\n%s", want)
	}
}
