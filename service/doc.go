// Package service runs a service on the fleet's boot and shutdown contract, and
// makes it observable.
//
// A service implements Service (OnStart, Run, OnStop) and calls process.Main, or
// drives an Instance itself (New, Run). The library
// drives nine boot phases, running, and a reverse-order graceful shutdown as
// explicit states of a state machine (see the phases package for the table and
// the diagrams directory for its picture):
//
//	init -> connecting -> configuring -> instrumenting -> loading_modules ->
//	building_adapters -> starting -> registering -> serving_health -> running ->
//	[draining ->] stopping_daemons -> stopping_health -> deregistering ->
//	cleaning_up -> stopped
//
// A failed Redis ping ends the boot in failed when Redis is required and continues
// degraded when it is not. A failing phase or a failing Run unwinds through the
// shutdown states and ends in failed. A stop can arrive in any phase: the phase's
// context is cancelled and the machine unwinds, skipping the steps whose work never
// started; Service.OnStop runs only if Service.OnStart was called.
//
// Every transition is an OpenTelemetry span (children of a lifecycle.boot or a
// lifecycle.shutdown root), a metric, a log line, and a status update in the Redis
// service registry. The registry entry exists from the first transition after Redis
// answered, so an operator sees an instance stuck mid-boot; the sg:events stream
// holds every transition, connect included (held in memory until Redis answered
// the ping, dropped if a required ping fails). An instance that serves clients
// advertises where to call it in its entry's addr (WithAdvertiseAddr,
// SG_ADVERTISE_ADDR, or a Service that implements Advertiser, such as one
// that bound port 0); clients follow the running instances with a
// registry.Watcher and call them through package balancer (see
// examples/httpservice).
//
// # Time limits
//
// A fault never hangs the lifecycle. Every Redis call a transition waits for
// has a deadline, the Redis timeout (WithRedisTimeout, SG_REDIS_TIMEOUT,
// default 2s, go-redis's retries included): the ping gate, the registration,
// the control-ops daemon's start and stop, the deregistration and the last
// flush of status updates. What a Redis that stops answering means is the
// redis_required guard's to decide, at every step:
//
//   - required (the default): the ping or the registration failing or not
//     answering in time fails the boot (failed, exit code 1), with an error
//     naming Redis and its address.
//   - not required: the instance goes on degraded. Once it knows Redis is
//     silent nothing in the boot waits on it; the registry's writer and
//     heartbeat register the instance when Redis answers again, and
//     readiness never depends on Redis.
//   - shutdown: the deregistration gets one deadline; if Redis does not
//     answer, the entry is left to expire by its TTL and the instance still
//     reaches stopped (exit code 0).
//
// The whole boot is bounded by the boot timeout (WithBootTimeout,
// SG_BOOT_TIMEOUT, default 5m), and a phase can get a budget of its own
// (WithPhaseTimeout). A phase past its limit has its context cancelled and,
// if it has not returned PhaseGrace later, is abandoned: the boot fails with
// a *PhaseTimeoutError naming the phase, its budget and the time spent, and
// unwinds through the shutdown steps whose work started. The abandoned
// goroutine is the user's: the library cannot stop it.
//
// # Stopping and restarting
//
// Main stops the instance on SIGINT or SIGTERM. A program that drives an
// Instance itself (New, then Boot and Run, or Run alone) asks for a stop with
// RequestStop, from anywhere, and waits for the end with Done; Shutdown does
// both. Whatever the state, one shutdown runs, through the steps whose boot
// work began.
//
// With a drain delay (SG_DRAIN_DELAY, WithDrainDelay) a stop or a restart of
// a running instance goes through draining first (stop [drain_delay],
// restart [drain_delay]): readiness 503, registry status draining (clients
// that route by the registry, package balancer's, stop sending it requests),
// Service.Run going on; after the delay Run's context is cancelled and the
// shutdown steps run, inside what is left of the shutdown timeout.
// SkipDrainDelay (Main: a second signal) ends the delay. An operator drains
// an instance without stopping it with the drain control op (Drain), and
// puts it back with undrain (Undrain); restart and stop work from draining,
// and do not wait the delay again.
//
// Under systemd, Main notifies the service manager (WithSystemdNotify):
// READY=1 in running, STATUS= on each transition, STOPPING=1 when a stop
// begins, and WATCHDOG=1 while the instance is alive.
//
// Control ops (restart, pull, drain, undrain, a service's own; package
// controlops) are rejected
// until the instance has a key (SG_CONTROL_KEY, WithControlKeys) or opts in to
// unsigned ops (SG_CONTROL_INSECURE=true, WithControlInsecure); the registry
// entry's control field and /healthz say which. A restart op (or
// RequestRestart) stops the instance through the shutdown states, leaving
// running by the restart event; then MainContext either exits with the
// restart exit code for a supervisor (WithRestartExit, SG_RESTART_EXIT_CODE)
// or, by default, replaces the process with exec, keeping the instance id and
// handing over, in SG_RESTART_* variables, the op's trace and the control
// channel's state: the ops sent meanwhile run in the new process, and none the
// old one handled runs twice (see MainContext).
//
// # Inside: a table of states and a table of steps
//
// The states, events and guards are data (phases.Lifecycle). Beside that
// table, each boot phase and shutdown step has one step: its work, and for a
// shutdown step the boot phase whose work it undoes, so a step whose work
// never began is skipped. Adding a boot phase is a row in each (see
// docs/diagrams.md in the repository).
//
// The state machine under it, Machine (NewMachine, MachineOption,
// Transition, Observer), runs any phases.Table, guards, spans and metrics
// included: a service may drive its own workflows with it (see
// examples/jobmachine). Its spans and data points carry lifecycle.machine,
// the table's name, so they never mix with the lifecycle's.
package service
