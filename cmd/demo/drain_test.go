package main

import (
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// code returns the status code of GET path on addr, 0 when it does not answer.
func code(addr, path string) int {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// pollCode polls GET path until it answers want, and returns how long it took.
func pollCode(t *testing.T, addr, path string, want int) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(20 * time.Second)
	for code(addr, path) != want {
		if time.Now().After(deadline) {
			t.Fatalf("GET %s never answered %d", path, want)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, bounded by the deadline
	}
	return time.Since(start)
}

const runCancelled = "demo: run context cancelled"

func TestDemoDrainDelayKeepsRunGoingOutOfRotationAfterSIGTERM(t *testing.T) {
	const delay = 2 * time.Second
	p := startDemo(t, "SG_DRAIN_DELAY=2s")
	addr := healthAddr(t, p)
	pollCode(t, addr, "/readyz", http.StatusOK)

	sent := time.Now()
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	took := pollCode(t, addr, "/readyz", http.StatusServiceUnavailable)
	t.Logf("/readyz 503 %v after SIGTERM", took)
	if took > 100*time.Millisecond {
		t.Errorf("/readyz went 503 %v after SIGTERM, want within 100ms", took)
	}
	if c := code(addr, "/livez"); c != http.StatusOK {
		t.Errorf("/livez while draining = %d, want 200", c)
	}
	if strings.Contains(p.Output(), runCancelled) {
		t.Fatal("Run's context was cancelled at once, not after the drain delay")
	}
	p.WaitFor(t, runCancelled)
	if since := time.Since(sent); since < delay {
		t.Errorf("Run's context cancelled %v after SIGTERM, want after the %v drain delay", since, delay)
	}
	if c := p.Wait(t); c != 0 {
		t.Fatalf("exit code %d, want 0", c)
	}
	out := p.Output()
	for _, want := range []string{"from=running to=draining event=stop phase=\"\" duration=", "guard=drain_delay",
		"from=draining to=stopping_daemons event=stop", "to=stopped event=cleaned_up"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

func TestDemoSecondSignalDuringTheDrainDelayStopsCleanlyAtOnce(t *testing.T) {
	p := startDemo(t, "SG_DRAIN_DELAY=25s")
	addr := healthAddr(t, p)
	pollCode(t, addr, "/readyz", http.StatusOK)
	first := time.Now()
	_ = p.Signal(syscall.SIGTERM)
	p.WaitFor(t, "to=draining event=stop")
	afterSignalWindow(first)
	sent := time.Now()
	_ = p.Signal(syscall.SIGTERM)
	if c := p.Wait(t); c != 0 {
		t.Fatalf("exit code %d, want 0: the second signal ends the delay, the stop stays clean", c)
	}
	t.Logf("exited %v after the second signal (drain delay 25s)", time.Since(sent))
	if !strings.Contains(p.Output(), "signal received during the drain delay: shutting down now") {
		t.Error("the log does not say the second signal ended the delay")
	}
}

func TestDemoThirdSignalExitsAtOnce(t *testing.T) {
	p := startDemo(t, "SG_DRAIN_DELAY=25s", "DEMO_PHASE_DELAY=cleaning_up=1h")
	p.WaitFor(t, "boot completed")
	first := time.Now()
	_ = p.Signal(syscall.SIGTERM)
	p.WaitFor(t, "to=draining event=stop")
	afterSignalWindow(first)
	second := time.Now()
	_ = p.Signal(syscall.SIGTERM)
	p.WaitFor(t, "demo: slow phase")
	afterSignalWindow(second)
	_ = p.Signal(syscall.SIGTERM)
	if c := p.Wait(t); c != 1 {
		t.Fatalf("exit code %d, want 1", c)
	}
	if !strings.Contains(p.Output(), "signal received during the shutdown: exiting at once") {
		t.Error("log does not say why it exited")
	}
}

func TestDemoDrainDelayNotShorterThanTheShutdownTimeoutExitsTwoNamingIt(t *testing.T) {
	p := startDemo(t, "SG_DRAIN_DELAY=30s")
	if c := p.Wait(t); c != 2 {
		t.Fatalf("exit code %d, want 2", c)
	}
	if out := p.Output(); !strings.Contains(out, `SG_DRAIN_DELAY=\"30s\"`) || !strings.Contains(out, "shutdown timeout (30s)") {
		t.Errorf("output does not name SG_DRAIN_DELAY and the shutdown timeout:\n%s", out)
	}
}
