package service

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stargazer/lifecycle/diagrams"
	"github.com/stargazer/lifecycle/phases"
)

func TestDebugLifecycleShowsTheCurrentState(t *testing.T) {
	f := newFixture(t)
	in, err := New(newTestService(), f.options()...)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Boot(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer in.Shutdown(context.Background())

	for format, want := range map[string][]byte{
		"mermaid": diagrams.Mermaid(phases.Lifecycle(), diagrams.Highlight(phases.Running)),
		"dot":     diagrams.DOT(phases.Lifecycle(), diagrams.Highlight(phases.Running)),
	} {
		resp, err := http.Get("http://" + in.HealthAddr() + "/debug/lifecycle?format=" + format)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d: %s", format, resp.StatusCode, body)
		}
		if string(body) != string(want) {
			t.Errorf("%s: the live diagram is not the table's diagram with running highlighted", format)
		}
		if strings.Contains(string(body), "class s_init current") {
			t.Errorf("%s: highlights init, not the current state", format)
		}
	}
}
