package process

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/internal/sdnotifytest"
	"github.com/stargazer/lifecycle/internal/tabletest"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/service"
)

// listenNotify listens as systemd would and points NOTIFY_SOCKET at the
// socket for the test.
func listenNotify(t *testing.T) *sdnotifytest.Socket {
	t.Helper()
	s := sdnotifytest.Listen(t)
	t.Setenv("NOTIFY_SOCKET", s.Path())
	return s
}

// notified builds an instance of svc with the process's notifier, as Run
// does; the caller runs it, and closes the notifier once it ended.
func notified(t *testing.T, f *fixture, svc service.Service, opts ...service.Option) (*service.Instance, *notifier) {
	t.Helper()
	n := newNotifier(true, f.clock)
	if n != nil {
		opts = append(opts, service.WithTransitionObserver(n))
	}
	in, err := service.New(svc, f.options(opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	n.start(in, in.Logger())
	return in, n
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
	in, notify := notified(t, f, newTestService())
	defer notify.close()
	done := startRun(t, in)
	n := sock.WaitFor(t, "READY=1") + 1 // the notifications up to READY=1
	msgs := sock.Messages()[:n]
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
	sock.WaitFor(t, "WATCHDOG=1")
	in.RequestStop()
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	// As Main does: the last STATUS= is sent by close. Sync takes in what
	// was sent before it; the socket reads on a goroutine of its own.
	notify.close()
	sock.Sync(t)
	all := sock.Messages()
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
	svc := newTestService()
	in, notify := notified(t, f, svc, service.WithDrainDelay(time.Second))
	defer notify.close()
	done := startRun(t, in)
	svc.waitRun(t)
	if err := in.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	sock.WaitFor(t, "STATUS=draining")
	if err := in.Undrain(context.Background()); err != nil {
		t.Fatal(err)
	}
	sock.Sync(t)
	if c := count(sock.Messages(), "STOPPING=1"); c != 0 {
		t.Fatalf("a drain op sent STOPPING=1 (%d): it is not a stop", c)
	}
	n := sock.WaitFor(t, "READY=1")
	in.RequestStop()
	i := sock.WaitFor(t, "STOPPING=1")
	if m := sock.Messages()[i]; !strings.HasPrefix(m, "STOPPING=1\nSTATUS=draining") {
		t.Errorf("STOPPING=1 came with %q, want it with the drain", m)
	}
	if i <= n {
		t.Errorf("STOPPING=1 before READY=1")
	}
	f.clock.Advance(time.Second)
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	sock.Sync(t)
	if c := count(sock.Messages(), "STOPPING=1"); c != 1 {
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
	in, notify := notified(t, f, svc, service.WithHealthOption(health.WithStuckAfter(time.Minute)),
		service.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	defer notify.close()
	done := startRun(t, in)
	<-svc.blocked
	sock.WaitFor(t, "STATUS=configuring")
	// Slow, not wedged: pings and extensions (3 ticks of 1s).
	f.clock.Advance(time.Second)
	sock.WaitFor(t, "EXTEND_TIMEOUT_USEC=3000000")
	sock.WaitFor(t, "WATCHDOG=1")
	// One tick a second of fake time until the instance is wedged (a minute
	// in configuring); each tick is waited for by the ping it sends or, once
	// wedged, by the log line saying the pings stop.
	const muted = "systemd watchdog: not pinging"
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), muted) {
		pings := count(sock.Messages(), "WATCHDOG=1")
		f.clock.Advance(time.Second)
		for count(sock.Messages(), "WATCHDOG=1") == pings && !strings.Contains(logs.String(), muted) {
			if time.Now().After(deadline) {
				t.Fatalf("the watchdog never stopped pinging a wedged instance; log:\n%s", logs.String())
			}
			select {
			case <-sock.Arrived():
			case <-time.After(10 * time.Millisecond): // polling the log, bounded by the deadline
			}
		}
	}
	if !strings.Contains(logs.String(), "wedged") {
		t.Errorf("the log does not say the instance is wedged:\n%s", logs.String())
	}
	// Pings sent before the tick that found the instance wedged may still be
	// on their way to the reader: take them in before counting from here.
	sock.Sync(t)
	before := len(sock.Messages())
	// Five more ticks, each waited for until the notifier has handled it, so
	// every one of them runs while the instance is still wedged.
	for i := 0; i < 5; i++ {
		handled := notify.ticks.Load()
		f.clock.Advance(time.Second)
		for notify.ticks.Load() == handled {
			if time.Now().After(deadline) {
				t.Fatal("the notifier never handled a tick of the clock")
			}
			runtime.Gosched()
		}
	}
	sock.Sync(t)
	for _, m := range sock.Messages()[before:] {
		if m == "WATCHDOG=1" || strings.HasPrefix(m, "EXTEND_TIMEOUT_USEC") {
			t.Errorf("%q sent after the instance was wedged", m)
		}
	}
	// Once the stop moves the instance on it is not wedged any more: a tick
	// may ping again, so nothing is asserted past this point.
	in.RequestStop()
	_ = wait(t, done)
}

func TestSystemdNotificationsNeedTheSocket(t *testing.T) {
	sock := listenNotify(t)
	t.Setenv("WATCHDOG_USEC", "2000000")
	t.Setenv("WATCHDOG_PID", "1") // another process: no watchdog for this one
	if n := newNotifier(true, clockwork.NewFakeClock()); n == nil || n.watchdog != 0 {
		t.Fatalf("notifier %+v: want one without a watchdog (WATCHDOG_PID is another process)", n)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if n := newNotifier(true, clockwork.NewFakeClock()); n != nil {
		t.Error("a notifier without NOTIFY_SOCKET")
	}
	if m := sock.Messages(); len(m) != 0 {
		t.Errorf("messages %q from notifiers that never ran", m)
	}
}

// Run notifies by itself: with NOTIFY_SOCKET set, a process that boots and
// stops sends READY=1 and STOPPING=1, and the last STATUS= before it returns.
func TestRunNotifiesSystemdFromBootToStop(t *testing.T) {
	sock := listenNotify(t)
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() { code <- f.config(nil).Run(ctx, newTestService(), f.options()...) }()
	sock.WaitFor(t, "READY=1")
	cancel()
	if c := <-code; c != ExitOK {
		t.Fatalf("Run = %d", c)
	}
	sock.Sync(t) // what was sent before Run returned, read
	all := sock.Messages()
	if last := all[len(all)-1]; !strings.HasPrefix(last, "STATUS=stopped") {
		t.Errorf("last notification %q, want STATUS=stopped, sent before Run returned", last)
	}
	if count(all, "STOPPING=1") != 1 {
		t.Errorf("notifications %q, want one STOPPING=1", all)
	}
}

// stub is the instance as the notifier sees it: told when a stop began.
type stub struct{ stopping atomic.Bool }

func (s *stub) Restarting() bool { return false }
func (s *stub) Stopping() bool   { return s.stopping.Load() }
func (s *stub) Alive() error     { return nil }

// The notifier follows a table grown by the recipe of docs/architecture.md
// with no edit: the new boot phase's STATUS= names its number, READY=1 comes
// once the boot is over, and the new control state is not a stop.
func TestSystemdNotificationsFollowAGrownTable(t *testing.T) {
	sock := listenNotify(t)
	n := newNotifier(true, clockwork.NewFakeClock())
	in := &stub{}
	n.start(in, slog.New(slog.DiscardHandler))
	g := tabletest.Grown()
	m, err := lifecycle.NewMachine(g,
		lifecycle.WithGuard(phases.GuardRedisRequired, func() bool { return true }),
		lifecycle.WithGuard(phases.GuardFailing, func() bool { return false }),
		lifecycle.WithGuard(phases.GuardDrainDelay, func() bool { return false }),
		lifecycle.WithMachineObserver(n))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	for _, ev := range []phases.Event{phases.Connect, phases.PingOK, phases.Configured, phases.Instrumented, phases.ModulesLoaded,
		phases.AdaptersBuilt, tabletest.Warmed, phases.Started, phases.Registered, phases.HealthServing, tabletest.Pause, tabletest.Resume} {
		if err := m.Fire(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	in.stopping.Store(true)
	for _, ev := range []phases.Event{phases.Stop, phases.DaemonsStopped, phases.HealthStopped, phases.Deregistered, phases.CleanedUp} {
		if err := m.Fire(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	n.close()
	sock.Sync(t)
	msgs := sock.Messages()
	if i := slices.IndexFunc(msgs, func(m string) bool { return strings.Contains(m, "STATUS=warming_up (phase 7): the caches are filled") }); i < 0 {
		t.Errorf("no STATUS= for warming_up as phase 7 in %q", msgs)
	}
	if !slices.Contains(msgs, "STATUS=starting (phase 8): the service starts its machinery") {
		t.Errorf("starting is not phase 8 in %q", msgs)
	}
	if c := count(msgs, "READY=1"); c != 1 {
		t.Errorf("%d READY=1 (resume goes back to running too), want 1: %q", c, msgs)
	}
	i := slices.IndexFunc(msgs, func(m string) bool { return strings.Contains(m, "STATUS=pausing") })
	if i < 0 || strings.Contains(msgs[i], "STOPPING=1") {
		t.Errorf("pausing: %q, want a STATUS= without STOPPING=1", msgs)
	}
	if j := slices.IndexFunc(msgs, func(m string) bool { return strings.Contains(m, "STOPPING=1") }); j < 0 || !strings.Contains(msgs[j], "stopping_daemons") {
		t.Errorf("STOPPING=1 not with the first shutdown step: %q", msgs)
	}
}
