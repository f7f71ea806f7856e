package process

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/jonboulle/clockwork"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/phases"
)

// The process tells systemd what the instance does (sd_notify(3)), through
// github.com/coreos/go-systemd/v22/daemon, when NOTIFY_SOCKET is set: a
// Type=notify unit then knows when the service is ready, when it stops, and
// whether it is still alive. The package doc lists the messages.

// extendEvery is how often a boot that takes long asks systemd for more
// time, when no watchdog sets the pace (half of WATCHDOG_USEC does).
const extendEvery = 5 * time.Second

// notifier sends the instance's notifications to systemd.
type notifier struct {
	clock    clockwork.Clock
	watchdog time.Duration // WATCHDOG_USEC; 0 without a watchdog
	every    time.Duration // the tick: watchdog pings and boot extensions
	reload   bool          // a restart replaces the process (exec): RELOADING=1
	wdErr    error         // WATCHDOG_USEC or WATCHDOG_PID unreadable

	mu      sync.Mutex
	in      instance // set by start, before the first transition
	log     *slog.Logger
	queue   []string
	ready   bool // READY=1 went out
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

// instance is what the notifier asks the instance (a *service.Instance).
type instance interface {
	Restarting() bool
	Stopping() bool
	Alive() error
}

// newNotifier returns the process's notifier, or nil when NOTIFY_SOCKET is
// unset (go-systemd reads it, and WATCHDOG_*, from the process's
// environment). reload says that a restart replaces the process (exec).
func newNotifier(reload bool, clock clockwork.Clock) *notifier {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return nil
	}
	n := &notifier{clock: clock, every: extendEvery, reload: reload,
		wake: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	wd, err := daemon.SdWatchdogEnabled(false)
	n.wdErr = err
	if wd > 0 {
		n.watchdog, n.every = wd, wd/2
	}
	return n
}

// Transitioned queues the notification of t; the notifier's goroutine sends
// it. What a transition means to systemd comes from its destination's role
// and from why the instance leaves running (Instance.Stopping, Restarting).
func (n *notifier) Transitioned(_ context.Context, t lifecycle.Transition) {
	msg := "STATUS=" + statusText(t.Phase)
	n.mu.Lock()
	role := t.Phase.Role
	switch {
	case !n.ready && role == phases.RoleServing:
		// The boot is over.
		n.ready = true
		msg = daemon.SdNotifyReady + "\n" + msg
	case n.leaving, role == phases.RoleServing:
	case n.in.Restarting():
		n.leaving = true
		if n.reload {
			msg = daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec() + msg
		}
	case n.in.Stopping(), role == phases.RoleStopped, role == phases.RoleFailed:
		// A stop or a failure begins the shutdown; a drain op does not.
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

// start starts the notifier's goroutine for instance in; close stops it.
// Both may be called on a nil notifier.
func (n *notifier) start(in instance, log *slog.Logger) {
	if n == nil {
		return
	}
	if n.wdErr != nil {
		log.Warn("systemd watchdog: WATCHDOG_USEC or WATCHDOG_PID unreadable: not pinging", "error", n.wdErr)
	}
	log.Info("systemd notifications on", "watchdog", n.watchdog)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started {
		return
	}
	n.in, n.log, n.started = in, log, true
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
	why := n.in.Alive()
	n.mu.Lock()
	changed := n.muted != (why != nil)
	n.muted = why != nil
	booting := !n.ready && !n.leaving
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
	if booting {
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
