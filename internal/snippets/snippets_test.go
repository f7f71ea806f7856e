package snippets

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// root is the repository: the directory of the library's go.mod.
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", dir, err)
	}
	return dir
}

// Every Go snippet of the documentation (the README, docs/, the examples'
// READMEs, package and declaration doc comments) parses, and is a quote of a
// Go file that go test compiles: an Example (which runs, its output checked),
// or a file of a package with tests. A snippet that no longer matches the
// code fails here, naming where it is.
func TestEveryGoSnippetIsAQuoteOfTestedCode(t *testing.T) {
	dir := root(t)
	sources, err := Sources(dir)
	if err != nil {
		t.Fatal(err)
	}
	var all []Snippet
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != dir && (strings.HasPrefix(d.Name(), ".") || strings.HasPrefix(d.Name(), "_") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			sn, err := DocComments(path)
			all = append(all, sn...)
			return err
		}
		if strings.HasSuffix(path, ".md") {
			sn, err := Markdown(path)
			all = append(all, sn...)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 10 {
		t.Fatalf("found %d snippets: the walk missed the documentation", len(all))
	}
	for _, sn := range all {
		where := strings.TrimPrefix(sn.Where, dir+string(filepath.Separator))
		if err := sn.Parse(); err != nil {
			t.Errorf("%s: the snippet is not Go: %v\n%s", where, err, sn.Code)
			continue
		}
		var quoted, untested []string
		for _, src := range sources {
			if src.Quotes(sn) {
				rel := strings.TrimPrefix(src.Path, dir+string(filepath.Separator))
				if src.Tested {
					quoted = append(quoted, rel)
				} else {
					untested = append(untested, rel)
				}
			}
		}
		switch {
		case len(quoted) > 0:
			t.Logf("%s: quotes %s", where, strings.Join(quoted, ", "))
		case len(untested) > 0:
			t.Errorf("%s: quotes %s, which no test compiles: add a test to its package", where, strings.Join(untested, ", "))
		default:
			t.Errorf("%s: the snippet is in no Go file: make it an Example (with // Output:) or a tested file and paste it from there\n%s", where, sn.Code)
		}
	}
}

func TestMarkdownFindsOnlyGoFences(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.md")
	md := "# x\n\n```sh\ngo test ./...\n```\n\n```go\nx := 1\n\n_ = x\n```\n\n````\n```go\nnot a fence of ours\n````\n"
	if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	sn, err := Markdown(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(sn) != 1 || sn[0].Code != "x := 1\n\n_ = x\n" || !strings.HasSuffix(sn[0].Where, "x.md:7") {
		t.Fatalf("Markdown = %+v, want the one go block at line 7", sn)
	}
}

func TestGoLikeTellsCodeFromTablesAndDiagrams(t *testing.T) {
	for code, want := range map[string]bool{
		"in, err := service.New(&w{})":                        true,
		"process.Main(&worker{})":                             true,
		"func main() {\n}":                                    true,
		"sg:registry:index:{<name>}  sorted set":              false,
		"init -> connecting -> configuring":                   false,
		"0 (ExitOK)      the instance reached stopped":        false,
		"SG_DRAIN_DELAY=1s go run ./cmd/demo":                 false,
		"- signed: keys are set (WithKeys; SG_CONTROL_KEY)":   false,
		"w, _ := reg.Watch(\"checkout\")\ndefer w.Close()":    true,
		"running -> draining (drain) -> running (undrain)":    false,
		"GET /healthz   application/health+json, the picture": false,
		"go test -count=1 ./...":                              false,
		"go run ./examples/httpservice  # then: curl":         false,
	} {
		if got := GoLike(code); got != want {
			t.Errorf("GoLike(%q) = %v, want %v", code, got, want)
		}
	}
}

func TestQuotesIgnoresIndentationButNotContent(t *testing.T) {
	src := Source{lines: significant("package x\n\nfunc f() {\n\tw, err := watch()\n\tif err != nil {\n\t\treturn err\n\t}\n}\n")}
	if !src.Quotes(Snippet{Code: "w, err := watch()\nif err != nil {\n    return err\n}\n"}) {
		t.Error("an indented quote of the body was not found")
	}
	if src.Quotes(Snippet{Code: "w, err := watch()\nreturn err\n"}) {
		t.Error("lines that are not consecutive in the file were taken for a quote")
	}
	if src.Quotes(Snippet{Code: "w, err := watch(ctx)\n"}) {
		t.Error("a changed line was taken for a quote")
	}
}
