// Package phases holds state machines as data: states, events, named guards and
// transitions. Lifecycle is the boot-and-shutdown contract every Stargazer service
// follows; the machine, the docs, the diagrams and the tests all read it, so adding
// a state is one edit in this package.
//
// The package imports nothing of the project. A Table describes any machine; the
// root package runs one, and users may describe their own machines with the same
// types.
//
// # The lifecycle's states
//
// Each is a constant of type State; its value is what the registry's status,
// the spans and the diagrams show. The label is the phase a boot or shutdown
// state is (the registry's phase field, the lifecycle.phase_label attribute).
//
//	group     label  constant          value
//	boot      1      Init              init
//	boot      2      Connecting        connecting
//	boot      3      Configuring       configuring
//	boot      4      Instrumenting     instrumenting
//	boot      5      LoadingModules    loading_modules
//	boot      6      BuildingAdapters  building_adapters
//	boot      7      Starting          starting
//	boot      8      Registering       registering
//	boot      9      ServingHealth     serving_health
//	run              Running           running
//	control          Pulling           pulling
//	control          Draining          draining
//	shutdown  S1     StoppingDaemons   stopping_daemons
//	shutdown  S2     StoppingHealth    stopping_health
//	shutdown  S3     Deregistering     deregistering
//	shutdown  S4     CleaningUp        cleaning_up
//	terminal         Stopped           stopped
//	terminal         Failed            failed
//
// The events (Connect, PingOK, ..., CleanedUp) and guards (GuardRedisRequired,
// GuardFailing, GuardDrainDelay) are constants too; Lifecycle().Transitions
// says which event leads where, and `sgctl diagram` draws it.
package phases
