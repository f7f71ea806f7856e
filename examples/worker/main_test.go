package main

import (
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/internal/proctest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(proctest.Main(m)) }

// The README's complete service, run as a user runs it (no environment but
// a free health port): it boots, and SIGTERM stops it cleanly.
func TestWorkerBootsAndStopsCleanlyOnSIGTERM(t *testing.T) {
	worker := proctest.Build(t, proctest.Module+"/examples/worker")
	p := proctest.Start(t, proctest.Cmd{Bin: worker, Env: []string{"SG_HEALTH_PORT=0"}})
	p.WaitFor(t, "boot completed")
	_ = p.Signal(syscall.SIGTERM)
	if code := p.Wait(t); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}
