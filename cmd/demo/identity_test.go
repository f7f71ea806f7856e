package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// A second process started with an instance id that runs already takes the
// entry over (both warn), and the first stops writing it. Once the second
// is gone, the first takes its entry back within one heartbeat (TTL 3s: a
// heartbeat a second), and keeps it.
func TestADuplicateInstanceIDGoneTheOriginalIsListedAgainWithinOneHeartbeat(t *testing.T) {
	srv := redistest.Server(t)
	reg := registry.New(srv.Client(t))
	a := startService(t, srv, "demo-1", "SG_SERVICE_TTL=3s")
	ea := runningEntry(t, a, reg, "demo-1")
	b := startService(t, srv, "demo-1", "SG_SERVICE_TTL=3s")
	b.WaitFor(t, "took over an entry that had not expired")
	pollEntry(t, reg, "b's entry", func(e registry.Entry) bool { return e.PID == b.PID() && e.Status == "running" })
	a.WaitFor(t, "another process took this instance's entry over")
	bStarted := time.Now()
	for time.Since(bStarted) < 3*time.Second { // the duplicate runs 3s, as in the report
		if e, err := reg.Entry(t.Context(), "demo", "demo-1"); err == nil && e.PID != b.PID() {
			t.Fatalf("entry %+v while b runs, want b's (pid %d)", e, b.PID())
		}
		time.Sleep(100 * time.Millisecond) // sampling the entry over the 3s
	}
	if err := b.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := b.Wait(t); code != 0 {
		t.Fatalf("b exited %d", code)
	}
	gone := time.Now()
	back := pollEntry(t, reg, "a's entry back", func(e registry.Entry) bool { return e.PID == ea.PID && e.Status == "running" })
	t.Logf("a's entry back %v after b exited (heartbeat every 1s)", back.Sub(gone))
	// One heartbeat interval (1s), and a second for a loaded machine to
	// schedule the processes.
	if d := back.Sub(gone); d > 2*time.Second {
		t.Errorf("a's entry came back %v after b exited, want within one heartbeat (1s)", d)
	}
	a.WaitFor(t, "takes the entry back")
	// And it stays: ten samples over three heartbeats, and the listing has it.
	for range 10 {
		e, err := reg.Entry(t.Context(), "demo", "demo-1")
		if err != nil || e.PID != ea.PID {
			t.Fatalf("entry %+v, %v: want a's to stay", e, err)
		}
		time.Sleep(300 * time.Millisecond) // sampling the entry over three heartbeats
	}
	if es, err := reg.Instances(t.Context(), "demo"); err != nil || len(es) != 1 || es[0].PID != ea.PID {
		t.Errorf("Instances = %+v, %v: want a listed", es, err)
	}
	if strings.Count(a.Output(), "another process took this instance's entry over") != 1 {
		t.Errorf("a logged the loss more than once:\n%s", a.Output())
	}
}

// pollEntry polls the entry of demo-1 until ok holds, and returns when.
func pollEntry(t *testing.T, reg *registry.Registry, what string, ok func(registry.Entry) bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if e, err := reg.Entry(t.Context(), "demo", "demo-1"); err == nil && ok(e) {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}
