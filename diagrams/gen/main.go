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
	flag.Parse()
	if err := run(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	t := &phases.Lifecycle
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
	return nil
}
