package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// notification is one datagram systemd would have received, and when.
type notification struct {
	msg string
	at  time.Time
}

// notifySocket listens where NOTIFY_SOCKET points, as systemd does for a
// Type=notify unit.
type notifySocket struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	got  []notification
	done chan struct{}
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &notifySocket{path: path, conn: conn, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got = append(s.got, notification{string(buf[:n]), time.Now()})
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-s.done
		os.RemoveAll(dir)
		if t.Failed() {
			for _, n := range s.all() {
				t.Logf("%s %q", n.at.Format("15:04:05.000"), n.msg)
			}
		}
	})
	return s
}

func (s *notifySocket) all() []notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]notification(nil), s.got...)
}

// index returns the position of the first notification containing sub, or -1.
func (s *notifySocket) index(sub string) int {
	for i, n := range s.all() {
		if strings.Contains(n.msg, sub) {
			return i
		}
	}
	return -1
}

// waitFor polls until a notification containing sub arrived and returns its index.
func (s *notifySocket) waitFor(t *testing.T, sub string) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if i := s.index(sub); i >= 0 {
			return i
		}
		if time.Now().After(deadline) {
			t.Fatalf("no notification containing %q", sub)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

func TestDemoUnderSystemdNotifiesReadyPingsTheWatchdogAndSaysStopping(t *testing.T) {
	sock := listenNotify(t)
	const watchdog = time.Second
	p := startDemo(t, "NOTIFY_SOCKET="+sock.path, "WATCHDOG_USEC=1000000", "DEMO_PHASE_DELAY=loading_modules=1200ms")
	ready := sock.waitFor(t, "READY=1")
	readyAt := sock.all()[ready].at
	// The demo logs the transition to running before it notifies; its log
	// reaches the test through a pipe that may lag behind the socket, so wait
	// for the line, then compare the times.
	var ranAt time.Time
	for deadline := time.Now().Add(10 * time.Second); ranAt.IsZero(); {
		ranAt = logTime(p.output(), "to=running event=health_serving")
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
	if msg := sock.all()[ready].msg; msg != "READY=1\nSTATUS=running: the service does its work" {
		t.Errorf("ready notification %q, want READY=1 with STATUS= naming running", msg)
	}
	// The slow phase (1.2s, ticks every 0.5s) asked for more time.
	if i := sock.index("EXTEND_TIMEOUT_USEC=1500000"); i < 0 || i > ready {
		t.Errorf("no EXTEND_TIMEOUT_USEC=1500000 before READY=1 (index %d, ready %d)", i, ready)
	}
	for _, st := range []string{"STATUS=connecting", "STATUS=loading_modules (phase 5)", "STATUS=serving_health (phase 9)"} {
		if i := sock.index(st); i < 0 || i > ready {
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
		for _, n := range sock.all()[ready:] {
			if n.msg == "WATCHDOG=1" {
				pings = append(pings, n.at)
			}
		}
	}
	for i := 1; i < len(pings); i++ {
		if gap := pings[i].Sub(pings[i-1]); gap >= watchdog || gap < watchdog/4 {
			t.Errorf("watchdog gap %v, want about %v and under %v", gap, watchdog/2, watchdog)
		}
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if c := p.exitCode(t); c != 0 {
		t.Fatalf("exit code %d, want 0", c)
	}
	all := sock.all()
	stopping := sock.index("STOPPING=1")
	if stopping < 0 || !strings.HasPrefix(all[stopping].msg, "STOPPING=1\nSTATUS=stopping_daemons") {
		t.Fatalf("no STOPPING=1 with the first shutdown step after SIGTERM")
	}
	if last := all[len(all)-1].msg; !strings.HasPrefix(last, "STATUS=stopped") {
		t.Errorf("last notification %q, want STATUS=stopped", last)
	}
}

func TestDemoUnderSystemdStopsPingingOnceFailed(t *testing.T) {
	sock := listenNotify(t)
	// Run fails at once; the unwind's OnStop takes 1.5s, ticks every 0.25s.
	p := startDemo(t, "NOTIFY_SOCKET="+sock.path, "WATCHDOG_USEC=500000", "DEMO_FAIL_PHASE=running", "DEMO_PHASE_DELAY=cleaning_up=1500ms")
	if c := p.exitCode(t); c != 1 {
		t.Fatalf("exit code %d, want 1", c)
	}
	failed := sock.index("STATUS=failed")
	if failed < 0 {
		t.Fatal("no STATUS=failed")
	}
	all := sock.all()
	pingsBefore := 0
	for i, n := range all {
		if n.msg != "WATCHDOG=1" {
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
	if s := sock.index("STOPPING=1"); s < 0 || !strings.HasPrefix(all[s].msg, "STOPPING=1\nSTATUS=stopping_daemons") {
		t.Errorf("the failing unwind did not say STOPPING=1 at its first step")
	}
}

func TestDemoWithoutNotifySocketSendsNothing(t *testing.T) {
	sock := listenNotify(t)
	p := startDemo(t, "WATCHDOG_USEC=500000")
	p.waitFor(t, "boot completed")
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if c := p.exitCode(t); c != 0 {
		t.Fatalf("exit code %d", c)
	}
	if n := sock.all(); len(n) != 0 || strings.Contains(p.output(), "systemd notifications on") {
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
