package jobmachine_test

import (
	"os/exec"
	"strings"
	"testing"
)

// maxDeps bounds what a program that uses only the Machine links. Most of
// it is the standard library and the OpenTelemetry API: package
// go.opentelemetry.io/otel alone, the home of the global providers the
// Machine defaults to, is 217 packages (its propagation package imports
// net/http). The bound leaves room for a patch release of a dependency, not
// for a new one.
const maxDeps = 240

// A program that uses only the Machine (this example) links neither
// go-redis, gRPC, an OTLP or Prometheus exporter, nor the service runtime:
// those are paid for by the programs that run a service.
func TestAMachineProgramLinksNoRedisGRPCOrExporters(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	for _, d := range deps {
		for _, banned := range []string{"google.golang.org/grpc", "/otlp", "prometheus", "github.com/redis/go-redis", "github.com/stargazer/lifecycle/service", "github.com/stargazer/lifecycle/process", "go-systemd"} {
			if strings.Contains(d, banned) {
				t.Errorf("the Machine links %s", d)
			}
		}
	}
	t.Logf("go list -deps ./examples/jobmachine: %d packages", len(deps))
	if len(deps) > maxDeps {
		t.Errorf("%d packages linked, want at most %d", len(deps), maxDeps)
	}
}
