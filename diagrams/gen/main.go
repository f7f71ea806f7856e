// Command gen writes the lifecycle diagrams from phases.Lifecycle: lifecycle.mmd,
// lifecycle.dot, lifecycle.svg and README.md, into the directory given by -dir
// (default: the current one, which is diagrams/ under go generate).
//
//	go generate ./diagrams
//
// It needs Graphviz dot on PATH for the SVG, and exits 1 naming the problem
// otherwise, without writing anything.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/stargazer/lifecycle/diagrams"
	"github.com/stargazer/lifecycle/phases"
)

func main() {
	dir := flag.String("dir", ".", "directory to write the diagrams to")
	readme := flag.String("readme", "../README.md", "a README whose Mermaid block between the markers is rewritten (\"\" for none)")
	flag.Parse()
	if err := run(*dir, *readme); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir, readme string) error {
	t := phases.Lifecycle()
	if err := t.Validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dot := diagrams.DOT(t)
	svg, err := diagrams.SVG(ctx, dot)
	if err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
	}{
		{t.Name + ".mmd", diagrams.Mermaid(t)},
		{t.Name + ".dot", dot},
		{t.Name + ".svg", svg},
		{"README.md", diagrams.Markdown(t)},
	}
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		if err := os.WriteFile(path, f.data, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if readme == "" {
		return nil
	}
	old, err := os.ReadFile(readme)
	if err != nil {
		return err
	}
	updated, err := diagrams.Embed(old, diagrams.Mermaid(t))
	if err != nil {
		return fmt.Errorf("%s: %w", readme, err)
	}
	return os.WriteFile(readme, updated, 0o644)
}
