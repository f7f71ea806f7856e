package diagrams

import (
	"os"
	"os/exec"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// requireDot skips the test when Graphviz dot is not on PATH, and fails it when
// CI=true, where a missing dot means a broken CI image rather than a lean laptop.
func requireDot(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("dot"); err == nil {
		return
	}
	const msg = "graphviz dot is not on PATH: install graphviz (apt-get install -y graphviz) to run"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
