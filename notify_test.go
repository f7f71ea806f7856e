package lifecycle

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/phases"
)

// notifySocket is a unix datagram socket standing in for systemd's: it sets
// NOTIFY_SOCKET for the test and collects what arrives.
type notifySocket struct {
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
	got  chan struct{} // signalled on every message
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
	t.Setenv("NOTIFY_SOCKET", path)
	s := &notifySocket{conn: conn, got: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, string(buf[:n]))
			s.mu.Unlock()
			select {
			case s.got <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-s.done
		os.RemoveAll(dir)
	})
	return s
}

// sync returns once every datagram sent to the socket before the call has
// been read: it sends a marker of its own and waits for it (datagrams on a
// unix socket arrive in order). The marker is then dropped.
func (s *notifySocket) sync(t *testing.T) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, s.conn.LocalAddr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const marker = "TEST-SYNC"
	if _, err := c.Write([]byte(marker)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		for i, m := range s.msgs {
			if m == marker {
				s.msgs = append(s.msgs[:i], s.msgs[i+1:]...)
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the sync marker never arrived")
		}
		select {
		case <-s.got:
		case <-time.After(10 * time.Millisecond): // polling, bounded by the deadline
		}
	}
}

func (s *notifySocket) messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

// waitFor polls until a message containing want arrived, and returns the
// number of messages so far.
func (s *notifySocket) waitFor(t *testing.T, want string) int {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		msgs := s.messages()
		for i, m := range msgs {
			if strings.Contains(m, want) {
				return i + 1
			}
		}
		select {
		case <-s.got:
		case <-deadline:
			t.Fatalf("no notification with %q; got %q", want, msgs)
		}
	}
}

func count(msgs []string, sub string) int {
	n := 0
	for _, m := range msgs {
		if strings.Contains(m, sub) {
			n++
		}
	}
	return n
}

func TestSystemdNotificationsFollowTheLifecycle(t *testing.T) {
	sock := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "2000000") // pings every second
	t.Setenv("WATCHDOG_PID", "")
	f := newFixture(t)
	in, err := New(newDrainService(), f.options(WithSystemdNotify(true))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	n := sock.waitFor(t, "READY=1")
	msgs := sock.messages()[:n]
	if ready := msgs[n-1]; ready != "READY=1\nSTATUS=running: the service does its work" {
		t.Errorf("ready notification %q, want READY=1 with STATUS= naming running", ready)
	}
	// STATUS= on each boot phase, in order, before READY=1.
	var statuses []string
	for _, m := range msgs {
		state, _, _ := strings.Cut(strings.TrimPrefix(m[strings.LastIndex(m, "STATUS=")+len("STATUS="):], ""), " ")
		statuses = append(statuses, strings.TrimSuffix(state, ":"))
	}
	want := []string{"connecting", "configuring", "instrumenting", "loading_modules", "building_adapters", "starting", "registering", "serving_health", "running"}
	if strings.Join(statuses, " ") != strings.Join(want, " ") {
		t.Errorf("STATUS= states %q, want %q", statuses, want)
	}
	if c := count(msgs, "WATCHDOG=1") + count(msgs, "STOPPING=1"); c != 0 {
		t.Errorf("%d WATCHDOG=1 or STOPPING=1 before the first tick", c)
	}

	f.clock.Advance(time.Second)
	sock.waitFor(t, "WATCHDOG=1")
	in.RequestStop()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	all := sock.messages()
	var rest []string
	for _, m := range all[n:] {
		if m != "WATCHDOG=1" {
			rest = append(rest, m)
		}
	}
	if len(rest) == 0 || !strings.HasPrefix(rest[0], "STOPPING=1\nSTATUS=stopping_daemons (phase S1)") {
		t.Errorf("first notification after the stop: %q, want STOPPING=1 with the first shutdown step", rest)
	}
	if c := count(all, "STOPPING=1"); c != 1 {
		t.Errorf("%d STOPPING=1, want 1", c)
	}
	if last := all[len(all)-1]; !strings.HasPrefix(last, "STATUS=stopped") {
		t.Errorf("last notification %q, want STATUS=stopped", last)
	}
}

func TestSystemdStoppingIsSentAtDrainingWhenAStopWaitsOutItsDrainDelay(t *testing.T) {
	sock := listenNotify(t)
	f := newFixture(t)
	svc := newDrainService()
	in, err := New(svc, f.options(WithSystemdNotify(true), WithDrainDelay(time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	svc.waitRun(t)
	if err := in.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	sock.waitFor(t, "STATUS=draining")
	if err := in.Undrain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := count(sock.messages(), "STOPPING=1"); c != 0 {
		t.Fatalf("a drain op sent STOPPING=1 (%d): it is not a stop", c)
	}
	n := sock.waitFor(t, "READY=1")
	in.RequestStop()
	i := sock.waitFor(t, "STOPPING=1")
	if m := sock.messages()[i-1]; !strings.HasPrefix(m, "STOPPING=1\nSTATUS=draining") {
		t.Errorf("STOPPING=1 came with %q, want it with the drain", m)
	}
	if i <= n {
		t.Errorf("STOPPING=1 before READY=1")
	}
	f.clock.Advance(time.Second)
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	if c := count(sock.messages(), "STOPPING=1"); c != 1 {
		t.Errorf("%d STOPPING=1, want 1", c)
	}
}

func TestSystemdWatchdogStopsPingingAWedgedBootAndExtendsASlowOne(t *testing.T) {
	sock := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "2000000")
	t.Setenv("WATCHDOG_PID", "")
	f := newFixture(t)
	svc := newTestService()
	svc.blockIn = phases.Configuring
	logs := &lockedWriter{b: &bytes.Buffer{}}
	in, err := New(svc, f.options(WithSystemdNotify(true), WithHealthOption(health.WithStuckAfter(time.Minute)),
		WithLogger(slog.New(slog.NewTextHandler(logs, nil))))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	<-svc.blocked
	sock.waitFor(t, "STATUS=configuring")
	// Slow, not wedged: pings and extensions (3 ticks of 1s).
	f.clock.Advance(time.Second)
	sock.waitFor(t, "EXTEND_TIMEOUT_USEC=3000000")
	sock.waitFor(t, "WATCHDOG=1")
	// One tick a second of fake time until the instance is wedged (a minute
	// in configuring); each tick is waited for by the ping it sends or, once
	// wedged, by the log line saying the pings stop.
	const muted = "systemd watchdog: not pinging"
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), muted) {
		pings := count(sock.messages(), "WATCHDOG=1")
		f.clock.Advance(time.Second)
		for count(sock.messages(), "WATCHDOG=1") == pings && !strings.Contains(logs.String(), muted) {
			if time.Now().After(deadline) {
				t.Fatalf("the watchdog never stopped pinging a wedged instance; log:\n%s", logs.String())
			}
			select {
			case <-sock.got:
			case <-time.After(10 * time.Millisecond): // polling the log, bounded by the deadline
			}
		}
	}
	if !strings.Contains(logs.String(), "wedged") {
		t.Errorf("the log does not say the instance is wedged:\n%s", logs.String())
	}
	// Pings sent before the tick that found the instance wedged may still be
	// on their way to the reader: take them in before counting from here.
	sock.sync(t)
	before := len(sock.messages())
	// Five more ticks, each waited for until the notifier has handled it, so
	// every one of them runs while the instance is still wedged.
	for i := 0; i < 5; i++ {
		handled := in.notify.ticks.Load()
		f.clock.Advance(time.Second)
		for in.notify.ticks.Load() == handled {
			if time.Now().After(deadline) {
				t.Fatal("the notifier never handled a tick of the clock")
			}
			runtime.Gosched()
		}
	}
	sock.sync(t)
	for _, m := range sock.messages()[before:] {
		if m == "WATCHDOG=1" || strings.HasPrefix(m, "EXTEND_TIMEOUT_USEC") {
			t.Errorf("%q sent after the instance was wedged", m)
		}
	}
	// Once the stop moves the instance on it is not wedged any more: a tick
	// may ping again, so nothing is asserted past this point.
	in.RequestStop()
	_ = wait(t, done)
}

func TestSystemdNotificationsNeedTheOptionAndTheSocket(t *testing.T) {
	sock := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "2000000")
	t.Setenv("WATCHDOG_PID", "1") // another process: no watchdog for this one
	f := newFixture(t)
	in, err := New(newDrainService(), f.options(WithSystemdNotify(true))...)
	if err != nil {
		t.Fatal(err)
	}
	if in.notify == nil || in.notify.watchdog != 0 {
		t.Fatalf("notifier %+v: want one without a watchdog (WATCHDOG_PID is another process)", in.notify)
	}
	off, err := New(newDrainService(), f.options(WithInstanceID("i-2"))...)
	if err != nil {
		t.Fatal(err)
	}
	if off.notify != nil {
		t.Error("New without WithSystemdNotify(true) notifies")
	}
	t.Setenv("NOTIFY_SOCKET", "")
	unset, err := New(newDrainService(), f.options(WithInstanceID("i-3"), WithSystemdNotify(true))...)
	if err != nil {
		t.Fatal(err)
	}
	if unset.notify != nil {
		t.Error("an instance notifies without NOTIFY_SOCKET")
	}
	for _, x := range []*Instance{in, off, unset} {
		x.Close()
	}
	if m := sock.messages(); len(m) != 0 {
		t.Errorf("messages %q from instances that never ran", m)
	}
}
