package phases

import "slices"

// Lifecycle states. The strings are a contract (registry status, span attributes,
// diagrams): never rename one.
const (
	Init             State = "init"
	Connecting       State = "connecting"
	Configuring      State = "configuring"
	Instrumenting    State = "instrumenting"
	LoadingModules   State = "loading_modules"
	BuildingAdapters State = "building_adapters"
	Starting         State = "starting"
	Registering      State = "registering"
	ServingHealth    State = "serving_health"
	Running          State = "running"
	Pulling          State = "pulling"
	Draining         State = "draining"
	StoppingDaemons  State = "stopping_daemons"
	StoppingHealth   State = "stopping_health"
	Deregistering    State = "deregistering"
	CleaningUp       State = "cleaning_up"
	Stopped          State = "stopped"
	Failed           State = "failed"
)

// Lifecycle events.
const (
	Connect        Event = "connect"
	PingOK         Event = "ping_ok"
	PingSkipped    Event = "ping_skipped"
	PingFailed     Event = "ping_failed"
	Configured     Event = "configured"
	Instrumented   Event = "instrumented"
	ModulesLoaded  Event = "modules_loaded"
	AdaptersBuilt  Event = "adapters_built"
	Started        Event = "started"
	Registered     Event = "registered"
	HealthServing  Event = "health_serving"
	Pull           Event = "pull"
	PullDone       Event = "pull_done"
	Drain          Event = "drain"
	Undrain        Event = "undrain"
	Restart        Event = "restart"
	Stop           Event = "stop"
	Fail           Event = "fail"
	DaemonsStopped Event = "daemons_stopped"
	HealthStopped  Event = "health_stopped"
	Deregistered   Event = "deregistered"
	CleanedUp      Event = "cleaned_up"
)

// Lifecycle guards.
const (
	// GuardRedisRequired holds when a failed Redis ping must end the boot.
	GuardRedisRequired = "redis_required"
	// GuardFailing holds when a boot phase or Run failed, so the unwind ends in
	// Failed rather than Stopped.
	GuardFailing = "failing"
	// GuardDrainDelay holds when a stop or a restart finds the instance
	// running with a drain delay set: the instance leaves rotation (draining)
	// for that long before the shutdown steps.
	GuardDrainDelay = "drain_delay"
)

// Lifecycle groups.
const (
	GroupBoot     Group = "boot"
	GroupRun      Group = "run"
	GroupControl  Group = "control"
	GroupShutdown Group = "shutdown"
	GroupTerminal Group = "terminal"
)

// Lifecycle returns the boot contract: the boot phases, running, control
// ops, and a reverse-order shutdown that ends in stopped, or in failed when
// something failed. Every call returns a copy of its own: changing it changes
// nothing else.
func Lifecycle() *Table { return lifecycle.Clone() }

// lifecycle is the table Lifecycle copies. A stop or a failure can arrive in
// any boot phase (its group), in running and in the control states.
var lifecycle = Table{
	Name:    "lifecycle",
	Initial: Init,
	Groups: []GroupInfo{
		{Name: GroupBoot, Doc: "the boot phases, in order", Role: RoleWorking, Numbered: true},
		{Name: GroupRun, Doc: "Service.Run", Role: RoleServing},
		{Name: GroupControl, Doc: "control ops fired by the control-ops daemon", Role: RoleDraining},
		{Name: GroupShutdown, Doc: "graceful shutdown, the reverse of boot; steps whose work never started are skipped", Role: RoleWorking, Numbered: true, Prefix: "S"},
		{Name: GroupTerminal, Doc: "the process exits: 0 from stopped, 1 from failed (2 when a configuration error failed it)", Role: RoleStopped},
	},
	States: []StateInfo{
		{Name: Init, Group: GroupBoot, Hook: "validate identity, options and environment; build the health server; as the boot begins, check the health address can be bound, then LocalConfigurer.ConfigureLocal (no Redis yet)", Doc: "local init"},
		{Name: Connecting, Group: GroupBoot, Hook: "jitter, then Redis PING", Doc: "random jitter in [0, max], then the Redis ping gate"},
		{Name: Configuring, Group: GroupBoot, Hook: "Configurer.Configure", Doc: "config hooks"},
		{Name: Instrumenting, Group: GroupBoot, Hook: "Instrumenter.Instrument", Doc: "tracing and instrumentation hooks"},
		{Name: LoadingModules, Group: GroupBoot, Hook: "ModuleLoader.LoadModules", Doc: "module hooks (tools, plugins)"},
		{Name: BuildingAdapters, Group: GroupBoot, Hook: "AdapterBuilder.BuildAdapters", Doc: "adapter hooks (platform adapters)"},
		{Name: Starting, Group: GroupBoot, Hook: "Service.OnStart", Doc: "the service starts its machinery"},
		{Name: Registering, Group: GroupBoot, Hook: "registry entry completed; control-ops daemon and heartbeat started (8.5)", Doc: "registry registration"},
		{Name: ServingHealth, Group: GroupBoot, Hook: "health server started", Doc: "health server"},
		{Name: Running, Group: GroupRun, Hook: "Service.Run", Doc: "the service does its work"},
		{Name: Pulling, Group: GroupControl, Hook: "the registered pull handler", Doc: "a pull control op in progress"},
		{Name: Draining, Group: GroupControl, Hook: "Service.Run goes on; readiness reports 503", Doc: "out of rotation: a drain op, or a stop or restart waiting out the drain delay"},
		{Name: StoppingDaemons, Group: GroupShutdown, Hook: "control-ops daemon and heartbeat cancelled and awaited", Doc: "readiness reports 503 from here on"},
		{Name: StoppingHealth, Group: GroupShutdown, Hook: "health server stopped", Doc: "health server shut down"},
		{Name: Deregistering, Group: GroupShutdown, Hook: "registry entry removed", Doc: "deregistration"},
		{Name: CleaningUp, Group: GroupShutdown, Hook: "Service.OnStop (only if OnStart was called)", Doc: "the service releases what it started"},
		{Name: Stopped, Group: GroupTerminal, Terminal: true, Doc: "clean stop; exit code 0"},
		{Name: Failed, Group: GroupTerminal, Role: RoleFailed, Terminal: true, Doc: "boot or run failed; exit code 1 (2 for a configuration error)"},
	},
	Guards: []GuardInfo{
		{GuardRedisRequired, "Redis is required (SG_REDIS_REQUIRED=true): a failed ping ends the boot"},
		{GuardFailing, "a boot phase or Run failed: the unwind ends in failed"},
		{GuardDrainDelay, "a drain delay is set (SG_DRAIN_DELAY) and a stop or a restart asked for it: out of rotation for that long first"},
	},
	Transitions: []Transition{
		{Event: Connect, From: []State{Init}, To: Connecting},
		{Event: PingOK, From: []State{Connecting}, To: Configuring},
		{Event: PingSkipped, From: []State{Connecting}, To: Configuring},
		{Event: PingFailed, From: []State{Connecting}, To: Failed, Guard: Guard{Name: GuardRedisRequired}},
		{Event: PingFailed, From: []State{Connecting}, To: Configuring, Guard: Guard{Name: GuardRedisRequired, Not: true}},
		{Event: Configured, From: []State{Configuring}, To: Instrumenting},
		{Event: Instrumented, From: []State{Instrumenting}, To: LoadingModules},
		{Event: ModulesLoaded, From: []State{LoadingModules}, To: BuildingAdapters},
		{Event: AdaptersBuilt, From: []State{BuildingAdapters}, To: Starting},
		{Event: Started, From: []State{Starting}, To: Registering},
		{Event: Registered, From: []State{Registering}, To: ServingHealth},
		{Event: HealthServing, From: []State{ServingHealth}, To: Running},
		{Event: Pull, From: []State{Running}, To: Pulling},
		{Event: PullDone, From: []State{Pulling}, To: Running},
		{Event: Drain, From: []State{Running}, To: Draining},
		{Event: Undrain, From: []State{Draining}, To: Running},
		{Event: Restart, From: []State{Running}, To: Draining, Guard: Guard{Name: GuardDrainDelay}},
		{Event: Restart, From: []State{Running}, To: StoppingDaemons, Guard: Guard{Name: GuardDrainDelay, Not: true}},
		{Event: Restart, From: []State{Draining}, To: StoppingDaemons},
		{Event: Stop, From: []State{Running}, To: Draining, Guard: Guard{Name: GuardDrainDelay}},
		{Event: Stop, From: []State{Running}, To: StoppingDaemons, Guard: Guard{Name: GuardDrainDelay, Not: true}},
		// A stop or a failure can arrive in any boot phase, in running and
		// in the control states; stop from running has guarded edges of its
		// own.
		{Event: Stop, FromGroups: interruptible, To: StoppingDaemons},
		{Event: Fail, FromGroups: interruptible, To: StoppingDaemons},
		{Event: DaemonsStopped, From: []State{StoppingDaemons}, To: StoppingHealth},
		{Event: HealthStopped, From: []State{StoppingHealth}, To: Deregistering},
		{Event: Deregistered, From: []State{Deregistering}, To: CleaningUp},
		{Event: CleanedUp, From: []State{CleaningUp}, To: Failed, Guard: Guard{Name: GuardFailing}},
		{Event: CleanedUp, From: []State{CleaningUp}, To: Stopped, Guard: Guard{Name: GuardFailing, Not: true}},
	},
}

// interruptible are the groups whose states a stop or a failure leaves for
// the shutdown steps.
var interruptible = []Group{GroupBoot, GroupRun, GroupControl}

// NextEvent returns the event that completes state s of t, a lifecycle table
// (Lifecycle, or a copy of it being extended): the one event that leaves s
// other than stop and fail, read off the table, so a new state needs no
// second list; false when none or several do (connecting's ping outcomes).
func NextEvent(t *Table, s State) (Event, bool) {
	var found Event
	for _, tr := range t.Edges() {
		if tr.Event == Stop || tr.Event == Fail || !slices.Contains(tr.From, s) {
			continue
		}
		if found != "" && found != tr.Event {
			return "", false
		}
		found = tr.Event
	}
	return found, found != ""
}
