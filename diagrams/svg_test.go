package diagrams

import (
	"context"
	"errors"
	"html"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

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

// box is a text's extent in SVG user units, estimated from its anchor, font
// size and length: Helvetica averages under 0.55 em per character.
type box struct {
	x0, y0, x1, y1 float64
	text           string
}

func (a box) near(b box, margin float64) bool {
	return a.x0 < b.x1+margin && b.x0 < a.x1+margin && a.y0 < b.y1+margin && b.y0 < a.y1+margin
}

var (
	svgGroup = regexp.MustCompile(`(?s)<g id="\w+" class="(cluster|edge)">(.*?)</g>`)
	svgText  = regexp.MustCompile(`<text text-anchor="(\w+)" x="([-\d.]+)" y="([-\d.]+)" font-family="[^"]*" font-size="([\d.]+)">(.*?)</text>`)
)

func svgTexts(body string) []box {
	var out []box
	for _, m := range svgText.FindAllStringSubmatch(body, -1) {
		x, _ := strconv.ParseFloat(m[2], 64)
		y, _ := strconv.ParseFloat(m[3], 64)
		size, _ := strconv.ParseFloat(m[4], 64)
		w := 0.55 * size * float64(utf8.RuneCountInString(html.UnescapeString(m[5])))
		switch m[1] {
		case "middle":
			x -= w / 2
		case "end":
			x -= w
		}
		out = append(out, box{x, y - 0.8*size, x + w, y + 0.2*size, html.UnescapeString(m[5])})
	}
	return out
}

func TestNoEdgeLabelOverlapsAGroupTitle(t *testing.T) {
	requireDot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, opts := range [][]Option{nil, {Highlight(phases.Running)}} {
		svg, err := SVG(ctx, DOT(phases.Lifecycle(), opts...))
		if err != nil {
			t.Fatal(err)
		}
		var titles, labels []box
		for _, g := range svgGroup.FindAllStringSubmatch(string(svg), -1) {
			if g[1] == "cluster" {
				titles = append(titles, svgTexts(g[2])...)
			} else {
				labels = append(labels, svgTexts(g[2])...)
			}
		}
		if len(titles) != len(phases.Lifecycle().Groups) || len(labels) == 0 {
			t.Fatalf("found %d group titles and %d edge label lines in the SVG, want %d titles and some labels",
				len(titles), len(labels), len(phases.Lifecycle().Groups))
		}
		for _, ti := range titles {
			for _, l := range labels {
				if l.near(ti, 3) {
					t.Errorf("edge label %q overlaps (or comes within 3pt of) group title %q: %+v, %+v", l.text, ti.text, l, ti)
				}
			}
		}
	}
}
