// Package snippets finds the Go code blocks of the repository's documentation
// (Markdown ```go fences and the code blocks of package and declaration doc
// comments) and the compiled Go source that each one quotes. Its test keeps
// every snippet a quote of code that a test compiles and runs: a snippet
// that drifted from the API, or that never compiled, fails the suite and
// names the place to fix.
package snippets

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/doc/comment"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// A Snippet is one block of Go code in the documentation.
type Snippet struct {
	// Where names its place: a Markdown file and line, or a Go file and the
	// doc comment's declaration.
	Where string
	// Code is the block's text, unindented.
	Code string
}

// Lines returns the snippet's significant lines: trimmed, blank lines
// dropped. Quotes are compared so, which lets a snippet be indented unlike
// its source.
func (s Snippet) Lines() []string { return significant(s.Code) }

func significant(text string) []string {
	var out []string
	for l := range strings.SplitSeq(text, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// Parse reports whether the snippet is Go: a whole file, top-level
// declarations, or statements of a function body.
func (s Snippet) Parse() error {
	fset := token.NewFileSet()
	code := s.Code
	if strings.HasPrefix(strings.TrimSpace(code), "package ") {
		_, err := parser.ParseFile(fset, s.Where, code, parser.ParseComments)
		return err
	}
	_, declErr := parser.ParseFile(fset, s.Where, "package p\n"+code, 0)
	if declErr == nil {
		return nil
	}
	_, stmtErr := parser.ParseFile(fset, s.Where, "package p\nfunc _() {\n"+code+"\n}", 0)
	if stmtErr == nil {
		return nil
	}
	return fmt.Errorf("neither declarations (%v) nor statements (%v)", declErr, stmtErr)
}

var fenceRE = regexp.MustCompile("^\\s*```\\s*(\\S*)")

// Markdown returns the ```go blocks of a Markdown file.
func Markdown(path string) ([]Snippet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var (
		out    []Snippet
		inGo   bool
		inside bool
		start  int
		buf    strings.Builder
	)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		m := fenceRE.FindStringSubmatch(line)
		switch {
		case m != nil && !inside:
			inside, inGo, start = true, m[1] == "go", n
			buf.Reset()
		case m != nil && inside && m[1] == "":
			if inGo {
				out = append(out, Snippet{Where: fmt.Sprintf("%s:%d", path, start), Code: buf.String()})
			}
			inside, inGo = false, false
		case inside && inGo:
			buf.WriteString(line)
			buf.WriteByte('\n')
		}
	}
	return out, sc.Err()
}

// goLikeRE matches a line that only Go code has: a short variable
// declaration, a func, return, defer, package or import, or a call of a
// qualified name. Shell lines ("go test ./...") do not match.
var goLikeRE = regexp.MustCompile(`:=|^\s*(func|return|defer|package|import)\b|^\s*[A-Za-z_]\w*(\.[A-Za-z_]\w*)+\(`)

// GoLike reports whether a doc comment's code block is meant as Go, rather
// than a table of keys, a diagram or a listing.
func GoLike(code string) bool {
	for l := range strings.SplitSeq(code, "\n") {
		if goLikeRE.MatchString(l) {
			return true
		}
	}
	return false
}

// DocComments returns the Go-like code blocks of the package doc and of
// the doc comments of the declarations in the non-test Go files of dir.
func DocComments(dir string) ([]Snippet, error) {
	fset := token.NewFileSet()
	var out []Snippet
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		path := filepath.Join(dir, name)
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		add := func(what string, g *ast.CommentGroup) {
			if g == nil {
				return
			}
			var p comment.Parser
			for _, b := range p.Parse(g.Text()).Content {
				if c, ok := b.(*comment.Code); ok && GoLike(c.Text) {
					out = append(out, Snippet{Where: fmt.Sprintf("%s:%d (%s)", path, fset.Position(g.Pos()).Line, what), Code: c.Text})
				}
			}
		}
		add("package doc", f.Doc)
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				add(d.Name.Name, d.Doc)
			case *ast.GenDecl:
				add(d.Tok.String(), d.Doc)
				for _, s := range d.Specs {
					if t, ok := s.(*ast.TypeSpec); ok {
						add(t.Name.Name, t.Doc)
					}
				}
			}
		}
	}
	return out, nil
}

// A Source is a Go file that snippets may quote.
type Source struct {
	Path string
	// Tested: the file is a _test.go file, or its directory has one, so that
	// go test compiles it.
	Tested bool
	lines  []string
}

// Sources reads every Go file under root, skipping hidden directories and
// testdata.
func Sources(root string) ([]Source, error) {
	var out []Source
	hasTests := map[string]bool{}
	var paths []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || strings.HasPrefix(d.Name(), "_") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") {
			paths = append(paths, path)
			if strings.HasSuffix(path, "_test.go") {
				hasTests[filepath.Dir(path)] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		out = append(out, Source{Path: p, Tested: hasTests[filepath.Dir(p)], lines: significant(string(b))})
	}
	return out, nil
}

// Quotes reports whether the file holds the snippet's significant lines, in
// a row.
func (s Source) Quotes(sn Snippet) bool {
	want := sn.Lines()
	if len(want) == 0 {
		return true
	}
	for i := 0; i+len(want) <= len(s.lines); i++ {
		if s.lines[i] != want[0] {
			continue
		}
		j := 1
		for j < len(want) && s.lines[i+j] == want[j] {
			j++
		}
		if j == len(want) {
			return true
		}
	}
	return false
}
