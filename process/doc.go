// Package process runs a service.Service as the process: Main reads the
// fleet's environment (REDIS_URL, SG_*: ParseEnv), sets up OpenTelemetry
// from the standard OTEL_* variables, handles SIGINT and SIGTERM, tells
// systemd what the instance does, replaces the process after a restart op,
// and exits with a code a supervisor can act on:
//
//	func main() {
//		process.Main(&worker{}, service.WithServiceName("worker"))
//	}
//
// (examples/worker, the README's complete service.)
//
// It is a package of its own so that what only a process needs (the OTLP
// and Prometheus exporters that autoexport links, go-systemd, signal
// handling, exec) is paid for only by programs that call Main: a program
// or a test that drives a service.Instance itself links none of it.
//
// # Exit codes
//
//	0 (ExitOK)      the instance reached stopped (a stop during the boot included)
//	1 (ExitFailed)  boot or run failed (the instance reached failed), a signal
//	                arrived during the shutdown steps, New failed on something
//	                other than its configuration, or the exec of a restart failed
//	2 (ExitConfig)  invalid configuration, named in the message: a variable
//	                (ParseEnv, OTEL_*, SG_RESTART_EXIT_CODE) or an option (New),
//	                found before anything touched Redis; or the error that failed
//	                the instance wraps service.ErrConfig (a *service.ConfigError
//	                returned by a phase or by Service.Run; the health port taken)
//	3-125           a restart op stopped the instance cleanly, and
//	                SG_RESTART_EXIT_CODE (or Config.RestartExit; ExitRestart is 3)
//	                leaves the restart to a supervisor
//
// # Restarts
//
// After a restart op stopped the instance cleanly, the process replaces
// itself with exec (same binary, arguments and environment), keeping its
// instance id and handing over, in SG_RESTART_TRACEPARENT,
// SG_RESTART_NOT_BEFORE and SG_RESTART_NONCES, the op's trace and the
// control channel's state (service.HandOver): the ops sent meanwhile run in
// the new process, and none the old one handled runs twice, whatever
// happened to Redis. With SG_RESTART_EXIT_CODE set it exits with that code
// for a supervisor instead; the next process has no hand-over then, and ops
// issued more than the skew (5s) before it started are rejected as stale.
//
// # systemd
//
// With NOTIFY_SOCKET set (a Type=notify unit), the process sends, through
// go-systemd's daemon package:
//
//   - STATUS= on every transition, naming the state ("configuring (phase
//     3): config hooks"), which systemctl status shows;
//   - READY=1 when the boot is over (the instance first reaches a state of
//     role serving);
//   - STOPPING=1 when a stop or a failure begins the shutdown: at draining
//     when the stop waits out a drain delay, else at the first shutdown
//     step. A drain op is not a stop: it sends only STATUS=;
//   - RELOADING=1 (with MONOTONIC_USEC) on a restart op that replaces the
//     process with exec: the main pid stays, and the new image sends
//     READY=1 once it runs. A restart that exits for a supervisor sends only
//     STATUS=: systemd sees the exit code and its Restart= setting;
//   - WATCHDOG=1 every half of WATCHDOG_USEC (when set, and WATCHDOG_PID is
//     unset or this process) while the instance is alive as /livez sees it
//     (Instance.Alive): a failed or wedged instance stops pinging, and
//     systemd's watchdog ends it;
//   - EXTEND_TIMEOUT_USEC while the boot takes long: at each tick (half of
//     WATCHDOG_USEC, or every 5s) that finds the instance still booting and
//     alive, three ticks' worth, so a slow phase is not killed by
//     TimeoutStartSec; a wedged phase stops the extensions.
//
// Messages are sent by a goroutine of the process's own; a transition never
// waits for the socket, and the last STATUS= goes out before Run returns.
package process
