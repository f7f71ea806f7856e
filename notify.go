package lifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/jonboulle/clockwork"

	"github.com/stargazer/lifecycle/phases"
)

// The instance tells systemd what it does (sd_notify(3)), through
// github.com/coreos/go-systemd/v22/daemon, when NOTIFY_SOCKET is set: a
// Type=notify unit then knows when the service is ready, when it stops, and
// whether it is still alive.

// extendEvery is how often a boot that takes long asks systemd for more
// time, when no watchdog sets the pace (half of WATCHDOG_USEC does).
const extendEvery = 5 * time.Second

// WithSystemdNotify turns systemd notifications on or off. Main turns them
// on (a process is one instance); New leaves them off unless this option
// says on, so that a process running several instances (tests, an
// embedding program) does not speak for the unit several times. Either
// way nothing is sent without NOTIFY_SOCKET in the environment, which
// systemd sets for Type=notify units.
//
// What the instance sends (sd_notify(3)):
//
//   - STATUS= on every transition, naming the state ("configuring (phase
//     3): config hooks"), which systemctl status shows;
//   - READY=1 on reaching running at the end of the boot;
//   - STOPPING=1 when a stop or a failure begins the shutdown: at draining
//     when the stop waits out a drain delay (readiness goes 503 then), else
//     at the first shutdown step. A drain op is not a stop: it sends only
//     STATUS=;
//   - RELOADING=1 (with MONOTONIC_USEC) on a restart op that replaces the
//     process with exec: the main pid stays, and the new image sends
//     READY=1 once it runs. A restart that exits for a supervisor
//     (SG_RESTART_EXIT_CODE) sends only STATUS=: systemd sees the exit code
//     and its Restart= setting restarts the unit;
//   - WATCHDOG=1 every half of WATCHDOG_USEC (when set, and WATCHDOG_PID is
//     unset or this process, as sd_watchdog_enabled(3) says) while the
//     instance is alive as /livez sees it: not failed, not wedged in a boot
//     or shutdown state past the health server's limit (health.WithStuckAfter,
//     5 minutes by default). A wedged instance stops pinging, and systemd's
//     watchdog ends it. Without a health server only failed stops the pings;
//   - EXTEND_TIMEOUT_USEC while the boot takes long: at each tick (half of
//     WATCHDOG_USEC, or every 5s without a watchdog) that finds the instance
//     still booting and alive, three ticks' worth, so a slow phase is not
//     killed by TimeoutStartSec; a wedged phase stops the extensions. The
//     boot timeout (SG_BOOT_TIMEOUT) still bounds the boot.
//
// Messages are sent by a goroutine of the instance's own, started by Boot or
// Run and stopped when the instance is stopped or failed, after it sent
// the last STATUS=; a transition never waits for the socket.
func WithSystemdNotify(on bool) Option {
	return optionFunc(func(c *config) { c.notify, c.notifySet = on, true })
}

// notifier sends the instance's notifications to systemd.
type notifier struct {
	in       *Instance
	log      *slog.Logger
	clock    clockwork.Clock
	watchdog time.Duration // WATCHDOG_USEC; 0 without a watchdog
	every    time.Duration // the tick: watchdog pings and boot extensions
	reload   bool          // a restart replaces the process (exec): RELOADING=1

	mu      sync.Mutex
	queue   []string
	leaving bool // STOPPING=1 or RELOADING=1 went out
	started bool
	muted   bool // the watchdog is not pinging (logged once per change)
	sendErr bool // a failed send was logged
	wake    chan struct{}
	quit    chan struct{}
	done    chan struct{}
	close1  sync.Once
	ticks   atomic.Int64 // ticks handled, for tests that step the clock
}

// newNotifier returns the instance's notifier, or nil when notifications
// are off or NOTIFY_SOCKET is unset.
func newNotifier(in *Instance) *notifier {
	if !in.cfg.notify || os.Getenv("NOTIFY_SOCKET") == "" {
		return nil
	}
	n := &notifier{in: in, log: in.log, clock: in.cfg.clock, every: extendEvery, reload: in.cfg.execRestart,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		in.log.Warn("systemd watchdog: WATCHDOG_USEC or WATCHDOG_PID unreadable: not pinging", "error", err)
	}
	if wd > 0 {
		n.watchdog, n.every = wd, wd/2
	}
	in.log.Info("systemd notifications on", "watchdog", n.watchdog)
	return n
}

// Transitioned queues the notification of t; the notifier's goroutine sends it.
func (n *notifier) Transitioned(_ context.Context, t Transition) {
	msg := "STATUS=" + statusText(t.Phase)
	n.mu.Lock()
	switch {
	case t.Event == phases.HealthServing && t.To == phases.Running:
		msg = daemon.SdNotifyReady + "\n" + msg
	case n.leaving:
	case t.Event == phases.Restart:
		n.leaving = true
		if n.reload {
			msg = daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec() + msg
		}
	case t.Event == phases.Stop || t.Event == phases.Fail || t.Phase.Group == phases.GroupShutdown || t.Phase.Terminal:
		n.leaving = true
		msg = daemon.SdNotifyStopping + "\n" + msg
	}
	n.queue = append(n.queue, msg)
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// statusText is the STATUS= text of a state.
func statusText(s phases.StateInfo) string {
	name := string(s.Name)
	if s.Label != "" {
		name += " (phase " + s.Label + ")"
	}
	if s.Doc == "" {
		return name
	}
	return name + ": " + s.Doc
}

// start starts the notifier's goroutine; close stops it. Both may be called
// on a nil notifier.
func (n *notifier) start() {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started {
		return
	}
	n.started = true
	go n.loop()
}

// close sends what is queued and stops the goroutine, and waits for it.
func (n *notifier) close() {
	if n == nil {
		return
	}
	n.close1.Do(func() {
		n.mu.Lock()
		started := n.started
		n.started = true // no start after close
		n.mu.Unlock()
		if !started {
			n.flush()
			return
		}
		close(n.quit)
		<-n.done
	})
}

func (n *notifier) loop() {
	defer close(n.done)
	t := n.clock.NewTicker(n.every)
	defer t.Stop()
	for {
		select {
		case <-n.wake:
			n.flush()
		case <-t.Chan():
			n.tick()
		case <-n.quit:
			n.flush()
			return
		}
	}
}

// flush sends the queued notifications, in order.
func (n *notifier) flush() {
	n.mu.Lock()
	q := n.queue
	n.queue = nil
	n.mu.Unlock()
	for _, msg := range q {
		n.send(msg)
	}
}

// tick pings the watchdog and extends a long boot's start timeout while the
// instance is alive.
func (n *notifier) tick() {
	defer n.ticks.Add(1)
	n.flush()
	why := n.in.alive()
	n.mu.Lock()
	changed := n.muted != (why != nil)
	n.muted = why != nil
	n.mu.Unlock()
	if why != nil {
		if changed && n.watchdog > 0 {
			n.log.Error("systemd watchdog: not pinging: the instance is not alive", "error", why)
		}
		return
	}
	if changed {
		n.log.Info("systemd watchdog: pinging again")
	}
	if n.watchdog > 0 {
		n.send(daemon.SdNotifyWatchdog)
	}
	if info, _ := n.in.table.State(n.in.m.Current()); info.Group == phases.GroupBoot {
		n.send("EXTEND_TIMEOUT_USEC=" + strconv.FormatInt((3*n.every).Microseconds(), 10))
	}
}

func (n *notifier) send(msg string) {
	_, err := daemon.SdNotify(false, msg)
	if err == nil {
		return
	}
	n.mu.Lock()
	logged := n.sendErr
	n.sendErr = true
	n.mu.Unlock()
	if !logged {
		n.log.Warn("systemd notification not sent (later failures are not logged)", "notify_socket", os.Getenv("NOTIFY_SOCKET"), "error", err)
	}
}

// alive returns nil when /livez would answer 200, and why not otherwise.
func (in *Instance) alive() error {
	if in.health != nil {
		return in.health.Alive()
	}
	if s := in.m.Current(); s == phases.Failed {
		return fmt.Errorf("state %q", s)
	}
	return nil
}
