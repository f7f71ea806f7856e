package diagrams

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/phases"
)

func TestSVGSaysToInstallGraphvizWhenDotIsMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := SVG(context.Background(), DOT(phases.Lifecycle()))
	if !errors.Is(err, ErrNoGraphviz) {
		t.Fatalf("err = %v, want ErrNoGraphviz", err)
	}
	if !strings.Contains(err.Error(), "install graphviz") {
		t.Errorf("error %q does not say to install graphviz", err)
	}
}

func TestSVGReportsWhatDotRejects(t *testing.T) {
	requireDot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := SVG(ctx, []byte("digraph { a -> ; }"))
	if err == nil {
		t.Fatal("SVG accepted invalid DOT")
	}
	if !strings.Contains(err.Error(), "syntax error") {
		t.Errorf("error %q does not carry dot's message", err)
	}
}

func TestSVGWithACancelledContextReturnsTheContextError(t *testing.T) {
	requireDot(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := SVG(ctx, DOT(phases.Lifecycle()))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestSVGCarriesNoGraphvizVersion(t *testing.T) {
	requireDot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svg, err := SVG(ctx, DOT(phases.Lifecycle()))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(svg), "graphviz version") {
		t.Errorf("SVG names the Graphviz version:\n%.400s", svg)
	}
}
