package main

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/internal/sdnotifytest"
)

func TestDemoUnderSystemdNotifiesReadyPingsTheWatchdogAndSaysStopping(t *testing.T) {
	sock := sdnotifytest.Listen(t)
	sock.Timeout = 20 * time.Second // a process to start and boot
	const watchdog = time.Second
	p := startDemo(t, "NOTIFY_SOCKET="+sock.Path(), "WATCHDOG_USEC=1000000", "DEMO_PHASE_DELAY=loading_modules=1200ms")
	ready := sock.WaitFor(t, "READY=1")
	readyAt := sock.All()[ready].At
	// The demo logs the transition to running before it notifies; its log
	// reaches the test through a pipe that may lag behind the socket, so wait
	// for the line, then compare the times.
	var ranAt time.Time
	for deadline := time.Now().Add(10 * time.Second); ranAt.IsZero(); {
		ranAt = logTime(p.Output(), "to=running event=health_serving")
		if ranAt.IsZero() {
			if time.Now().After(deadline) {
				t.Fatal("the demo never logged the transition to running")
			}
			time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
		}
	}
	if readyAt.Before(ranAt) {
		t.Errorf("READY=1 arrived at %s, before the instance reached running at %s", readyAt.Format("15:04:05.000"), ranAt.Format("15:04:05.000"))
	}
	if msg := sock.All()[ready].Msg; msg != "READY=1\nSTATUS=running: the service does its work" {
		t.Errorf("ready notification %q, want READY=1 with STATUS= naming running", msg)
	}
	// The slow phase (1.2s, ticks every 0.5s) asked for more time.
	if i := sock.Index("EXTEND_TIMEOUT_USEC=1500000"); i < 0 || i > ready {
		t.Errorf("no EXTEND_TIMEOUT_USEC=1500000 before READY=1 (index %d, ready %d)", i, ready)
	}
	for _, st := range []string{"STATUS=connecting", "STATUS=loading_modules (phase 5)", "STATUS=serving_health (phase 9)"} {
		if i := sock.Index(st); i < 0 || i > ready {
			t.Errorf("no %q before READY=1", st)
		}
	}

	// Six pings: every gap under WATCHDOG_USEC, none much under half of it.
	var pings []time.Time
	deadline := time.Now().Add(20 * time.Second)
	for len(pings) < 6 {
		if time.Now().After(deadline) {
			t.Fatalf("%d WATCHDOG=1 before the deadline, want 6 (one every %v)", len(pings), watchdog/2)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, bounded by the deadline
		pings = pings[:0]
		for _, n := range sock.All()[ready:] {
			if n.Msg == "WATCHDOG=1" {
				pings = append(pings, n.At)
			}
		}
	}
	for i := 1; i < len(pings); i++ {
		if gap := pings[i].Sub(pings[i-1]); gap >= watchdog || gap < watchdog/4 {
			t.Errorf("watchdog gap %v, want about %v and under %v", gap, watchdog/2, watchdog)
		}
	}

	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if c := p.Wait(t); c != 0 {
		t.Fatalf("exit code %d, want 0", c)
	}
	// The process is gone, but what it sent last may still wait in the
	// socket's queue for the reader.
	sock.Sync(t)
	all := sock.All()
	stopping := sock.Index("STOPPING=1")
	if stopping < 0 || !strings.HasPrefix(all[stopping].Msg, "STOPPING=1\nSTATUS=stopping_daemons") {
		t.Fatalf("no STOPPING=1 with the first shutdown step after SIGTERM")
	}
	if last := all[len(all)-1].Msg; !strings.HasPrefix(last, "STATUS=stopped") {
		t.Errorf("last notification %q, want STATUS=stopped", last)
	}
}

func TestDemoUnderSystemdStopsPingingOnceFailed(t *testing.T) {
	sock := sdnotifytest.Listen(t)
	// Run fails at once; the unwind's OnStop takes 1.5s, ticks every 0.25s.
	p := startDemo(t, "NOTIFY_SOCKET="+sock.Path(), "WATCHDOG_USEC=500000", "DEMO_FAIL_PHASE=running", "DEMO_PHASE_DELAY=cleaning_up=1500ms")
	if c := p.Wait(t); c != 1 {
		t.Fatalf("exit code %d, want 1", c)
	}
	sock.Sync(t) // what the process sent before it exited, read
	failed := sock.Index("STATUS=failed")
	if failed < 0 {
		t.Fatal("no STATUS=failed")
	}
	all := sock.All()
	pingsBefore := 0
	for i, n := range all {
		if n.Msg != "WATCHDOG=1" {
			continue
		}
		if i > failed {
			t.Errorf("WATCHDOG=1 after STATUS=failed (notification %d of %d)", i, len(all))
		}
		pingsBefore++
	}
	if pingsBefore == 0 {
		t.Error("no WATCHDOG=1 during the 1.5s unwind: the test cannot tell that the pings stopped")
	}
	if s := sock.Index("STOPPING=1"); s < 0 || !strings.HasPrefix(all[s].Msg, "STOPPING=1\nSTATUS=stopping_daemons") {
		t.Errorf("the failing unwind did not say STOPPING=1 at its first step")
	}
}

func TestDemoWithoutNotifySocketSendsNothing(t *testing.T) {
	sock := sdnotifytest.Listen(t)
	p := startDemo(t, "WATCHDOG_USEC=500000")
	p.WaitFor(t, "boot completed")
	_ = p.Signal(syscall.SIGTERM)
	if c := p.Wait(t); c != 0 {
		t.Fatalf("exit code %d", c)
	}
	sock.Sync(t) // anything it sent would be read by now
	if n := sock.All(); len(n) != 0 || strings.Contains(p.Output(), "systemd notifications on") {
		t.Errorf("notifications without NOTIFY_SOCKET: %v", n)
	}
}

// logTime returns the time of the first slog text line of out containing
// sub, or the zero time.
func logTime(out, sub string) time.Time {
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, sub) {
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "time=") {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(f[0], "time="))
		if err == nil {
			return at
		}
	}
	return time.Time{}
}
