package phases

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// stateConstants maps each State value declared in lifecycle.go to its
// constant's name.
func stateConstants(t *testing.T) map[State]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "lifecycle.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	names := map[State]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || vs.Type == nil || len(vs.Values) != len(vs.Names) {
			return true
		}
		if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "State" {
			return true
		}
		for i, v := range vs.Values {
			if lit, ok := v.(*ast.BasicLit); ok {
				s, _ := strconv.Unquote(lit.Value)
				names[State(s)] = vs.Names[i].Name
			}
		}
		return false
	})
	return names
}

// The package overview lists every state of Lifecycle, in table order, with
// its group, label, constant and value, as the table says them: go doc
// shows the constants without their type's listing hiding them.
func TestThePackageDocListsEveryLifecycleState(t *testing.T) {
	names := stateConstants(t)
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	_, _ = w.Write([]byte("group\tlabel\tconstant\tvalue\n"))
	for _, si := range Lifecycle().AllStates() {
		name, ok := names[si.Name]
		if !ok {
			t.Fatalf("state %q has no constant in lifecycle.go", si.Name)
		}
		_, _ = w.Write([]byte(string(si.Group) + "\t" + si.Label + "\t" + name + "\t" + string(si.Name) + "\n"))
	}
	_ = w.Flush()
	var want strings.Builder
	for l := range strings.Lines(b.String()) {
		want.WriteString("//\t" + strings.TrimRight(l, " \n") + "\n")
	}
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), want.String()) {
		t.Fatalf("phases/doc.go does not list the table's states; paste this under \"The lifecycle's states\":\n%s", want.String())
	}
}
