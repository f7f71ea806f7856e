package service

import (
	"os/exec"
	"strings"
	"testing"
)

// What only a process needs (the OTLP and Prometheus exporters that
// autoexport links, gRPC under them, go-systemd) is package process's: a
// program or a test that drives an Instance itself links none of it.
func TestTheRuntimeLinksNoExporterNorSystemd(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, d := range strings.Fields(string(out)) {
		for _, banned := range []string{"google.golang.org/grpc", "/otlp", "prometheus", "autoexport", "go-systemd", "github.com/stargazer/lifecycle/process"} {
			if strings.Contains(d, banned) {
				t.Errorf("package service links %s", d)
			}
		}
	}
}
