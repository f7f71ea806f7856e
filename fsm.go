package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/looplab/fsm"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/phases"
)

// Machine is an observable state machine built from a phases.Table on top of
// looplab/fsm.
//
// Fire moves the machine along one edge of the table. When several edges share an
// event and a source state, their guards choose: the first alternative, in table
// order, whose guard holds is taken, and that guard is recorded on the Transition.
// Events are serialised: concurrent Fire calls run one after another, each seeing
// the state the previous one left. An event that is not valid in the current state
// returns an *InvalidEventError and changes nothing. A panic in a guard becomes a
// *PanicError and leaves the machine where it was; a panic in an observer is
// recovered and logged, and the transition stands.
//
// After every transition each Observer is called, in registration order, on the
// goroutine that fired, before Fire returns. Observers must not block and must not
// call Fire (they would deadlock); they are where spans, metrics, logs and the
// registry status update come from.
//
// The machine never hands the caller's context to looplab/fsm: it passes a context
// without cancellation, because looplab leaves a machine stuck forever when a
// transition starts with a cancelled context. Work belongs outside the machine:
// do it, then Fire the event that reports how it went.
type Machine struct {
	table *phases.Table
	// fsm holds the machine's state: Current reads it, and every transition
	// is one of its events, which it checks against its own table.
	fsm    *fsm.FSM
	mu     sync.Mutex            // serialises Fire: a transition and its observers
	nodes  map[string]*stateNode // by state name: the edges that leave it
	last   *stateNode            // the node of looplab's state (Fire sets it after each move); guarded by mu
	guards map[string]func() bool
	obs    []Observer
	events map[phases.Event]bool // every event of the table
	clock  clockwork.Clock
	log    *slog.Logger

	metrics *metricsObserver
	// epoch is when NewMachine ran; since is when the machine entered its
	// state, in nanoseconds after epoch on the clock's monotonic reading.
	// Reading the monotonic clock alone costs half of what time.Now does.
	epoch time.Time
	since atomic.Int64
	// realClock: the clock is the real one, read with time.Since directly.
	realClock bool
}

// stateNode is a state with the edges that leave it, in table order: a state
// has few, so Fire finds an event's alternatives by a scan, without hashing.
type stateNode struct {
	state phases.State
	out   []*edge
}

// edge is one table transition with what Fire needs precomputed.
type edge struct {
	phases.Transition
	index    int    // in the table's Transitions: Transition.Edge
	fsmEvent string // distinct looplab event name per guarded alternative
	info     phases.StateInfo
	to       *stateNode
}

// Transition is what observers learn about one move of the machine.
type Transition struct {
	Event phases.Event
	From  phases.State
	To    phases.State
	// Guard is the guard that decided among alternatives; zero when unguarded.
	Guard phases.Guard
	// Phase describes the destination state.
	Phase phases.StateInfo
	// Cause is the error the event reports (a failed phase, Run's error), if any.
	Cause error
	// Entered is when the machine entered From; At is when it entered To.
	Entered time.Time
	At      time.Time
	// Edge is the position, in the table's Transitions, of the edge taken:
	// an observer can build what it needs per edge once, from the table, and
	// find it here without hashing the transition's names.
	Edge int
}

// Duration is how long the machine stayed in From.
func (t Transition) Duration() time.Duration { return t.At.Sub(t.Entered) }

// Observer is told about every transition. See Machine for the rules.
type Observer interface {
	Transitioned(ctx context.Context, t Transition)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(ctx context.Context, t Transition)

// Transitioned calls f.
func (f ObserverFunc) Transitioned(ctx context.Context, t Transition) { f(ctx, t) }

// ErrInvalidEvent is matched by errors.Is for every *InvalidEventError.
var ErrInvalidEvent = errors.New("lifecycle: invalid event")

// InvalidEventError reports an event that the table does not allow in the state the
// machine is in (or that it does not know at all, when Unknown is set), or one whose
// alternatives were all refused by their guards.
type InvalidEventError struct {
	Event phases.Event
	State phases.State
	// Unknown is set when the table has no such event anywhere.
	Unknown bool
	// Guards lists the guards that refused, when the event exists from State but
	// no alternative's guard held.
	Guards []string
}

func (e *InvalidEventError) Error() string {
	switch {
	case e.Unknown:
		return fmt.Sprintf("lifecycle: unknown event %q (state %q)", e.Event, e.State)
	case len(e.Guards) > 0:
		return fmt.Sprintf("lifecycle: event %q refused in state %q: no guard held (%v)", e.Event, e.State, e.Guards)
	default:
		return fmt.Sprintf("lifecycle: event %q is not valid in state %q", e.Event, e.State)
	}
}

// Is makes errors.Is(err, ErrInvalidEvent) true.
func (e *InvalidEventError) Is(target error) bool { return target == ErrInvalidEvent }

// PanicError is a panic in user code, recovered and turned into an error.
type PanicError struct {
	// Where names the code that panicked ("guard redis_required", "phase starting").
	Where string
	Value any
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("lifecycle: panic in %s: %v", e.Where, e.Value)
}

// Unwrap returns the panic value when it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// MachineOption configures NewMachine.
type MachineOption interface {
	applyMachine(*machineConfig)
}

type machineConfig struct {
	guards    map[string]func() bool
	observers []Observer
	tp        trace.TracerProvider
	mp        metric.MeterProvider
	clock     clockwork.Clock
	log       *slog.Logger
}

type machineOptionFunc func(*machineConfig)

func (f machineOptionFunc) applyMachine(c *machineConfig) { f(c) }

// WithGuard gives the function that decides the named guard. Every guard the
// table uses needs one. A nil fn is ignored.
func WithGuard(name string, fn func() bool) MachineOption {
	return machineOptionFunc(func(c *machineConfig) {
		if fn != nil {
			c.guards[name] = fn
		}
	})
}

// WithMachineObserver adds an observer of the machine's transitions, called
// after the built-in tracing and metrics observers. A nil o is ignored.
func WithMachineObserver(o Observer) MachineOption {
	return machineOptionFunc(func(c *machineConfig) {
		if o != nil {
			c.observers = append(c.observers, o)
		}
	})
}

// WithMachineTracerProvider sets where transition spans go. The default is the
// global TracerProvider. A nil tp is ignored.
func WithMachineTracerProvider(tp trace.TracerProvider) MachineOption {
	return machineOptionFunc(func(c *machineConfig) {
		if tp != nil {
			c.tp = tp
		}
	})
}

// WithMachineMeterProvider sets where the machine's metrics go. The default is
// the global MeterProvider. A nil mp is ignored.
func WithMachineMeterProvider(mp metric.MeterProvider) MachineOption {
	return machineOptionFunc(func(c *machineConfig) {
		if mp != nil {
			c.mp = mp
		}
	})
}

// WithMachineClock sets the clock that stamps transitions. A nil clock is ignored.
func WithMachineClock(clock clockwork.Clock) MachineOption {
	return machineOptionFunc(func(c *machineConfig) {
		if clock != nil {
			c.clock = clock
		}
	})
}

// WithMachineLogger sets where recovered observer panics are logged.
func WithMachineLogger(l *slog.Logger) MachineOption {
	return machineOptionFunc(func(c *machineConfig) {
		if l != nil {
			c.log = l
		}
	})
}

// NewMachine validates table and builds a machine in table.Initial.
// It fails when the table is inconsistent or a guard it uses has no function.
// Transition spans go to the TracerProvider given by WithMachineTracerProvider,
// or the global one, and metrics to the MeterProvider of
// WithMachineMeterProvider; both carry lifecycle.machine, the table's Name.
// NewMachine reads table once: changing it later does not change the machine.
func NewMachine(table *phases.Table, opts ...MachineOption) (*Machine, error) {
	if err := table.Validate(); err != nil {
		return nil, err
	}
	table = table.Clone() // the caller's table stays the caller's
	cfg := machineConfig{guards: map[string]func() bool{}, log: slog.Default()}
	for _, o := range opts {
		if o != nil {
			o.applyMachine(&cfg)
		}
	}
	realClock := cfg.clock == nil
	if realClock {
		cfg.clock = clockwork.NewRealClock()
	}
	for _, g := range table.Guards {
		if _, ok := cfg.guards[g.Name]; !ok {
			return nil, fmt.Errorf("lifecycle: machine %q: guard %q has no function (use WithGuard)", table.Name, g.Name)
		}
	}
	m := &Machine{
		table:  table,
		guards: cfg.guards,
		nodes:  map[string]*stateNode{},
		events: map[phases.Event]bool{},
		clock:  cfg.clock,
		log:    cfg.log,
		epoch:  cfg.clock.Now(),

		realClock: realClock,
	}
	for _, s := range table.States {
		m.nodes[string(s.Name)] = &stateNode{state: s.Name}
	}
	// looplab keeps one destination per (event, source): each guarded
	// alternative is an event of its own there, named "event[guard]".
	var descs fsm.Events
	for i, tr := range table.Edges() {
		info, _ := table.State(tr.To)
		e := &edge{Transition: tr, index: i, fsmEvent: string(tr.Event), info: info}
		if tr.Guard.Name != "" {
			e.fsmEvent = string(tr.Event) + "[" + tr.Guard.String() + "]"
		}
		src := make([]string, len(tr.From))
		for i, s := range tr.From {
			src[i] = string(s)
			n := m.nodes[string(s)]
			n.out = append(n.out, e)
		}
		m.events[tr.Event] = true
		e.to = m.nodes[string(tr.To)]
		descs = append(descs, fsm.EventDesc{Name: e.fsmEvent, Src: src, Dst: string(tr.To)})
	}
	m.fsm = fsm.NewFSM(string(table.Initial), descs, nil)
	m.last = m.nodes[string(table.Initial)]

	// The telemetry observers read the table and the public Transition only.
	if tracing := newTraceObserver(cfg.tp, table); tracing != nil {
		m.obs = append(m.obs, tracing)
	}
	if cfg.mp == nil {
		cfg.mp = otel.GetMeterProvider()
	}
	if _, off := cfg.mp.(metricnoop.MeterProvider); !off {
		metrics, err := newMetricsObserver(cfg.mp, table, m.Current)
		if err != nil {
			return nil, err
		}
		m.metrics = metrics
		m.obs = append(m.obs, metrics)
	}
	m.obs = append(m.obs, cfg.observers...)
	return m, nil
}

// Close releases the machine's metric callback. The machine still works after
// Close; only the state gauge stops reporting.
func (m *Machine) Close() { m.metrics.close() }

// Table returns a copy of the table given to NewMachine.
func (m *Machine) Table() *phases.Table { return m.table.Clone() }

// Current returns the state the machine is in: looplab/fsm's. It never waits
// for a Fire in progress.
func (m *Machine) Current() phases.State { return phases.State(m.fsm.Current()) }

// Since returns when the machine entered its current state. During a Fire it
// may already return the new state's time while Current still returns the
// old state, never the other way round: a state just entered never looks
// older than it is.
func (m *Machine) Since() time.Time { return m.epoch.Add(time.Duration(m.since.Load())) }

// Fire moves the machine along the edge that event takes from the current state,
// then tells the observers. ctx only carries values (the parent span of the
// transition span); its cancellation does not affect the transition. Fire
// returns *InvalidEventError when the event is not valid now, and *PanicError
// when a guard panicked; in both cases the state is unchanged.
func (m *Machine) Fire(ctx context.Context, event phases.Event) error {
	return m.FireWithCause(ctx, event, nil)
}

// FireWithCause is Fire for events that report an error, such as a failed phase.
// The cause is recorded on the transition span (status Error) and passed to the
// observers.
func (m *Machine) FireWithCause(ctx context.Context, event phases.Event, cause error) error {
	return m.fire(ctx, event, cause, "")
}

// FireFrom is Fire for a caller that decided on the state it saw: it fires
// event only if the machine is still in state from, and otherwise changes
// nothing and returns an *InvalidEventError naming the state it is in.
func (m *Machine) FireFrom(ctx context.Context, from phases.State, event phases.Event) error {
	return m.fire(ctx, event, nil, from)
}

func (m *Machine) fire(ctx context.Context, event phases.Event, cause error, from phases.State) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	// looplab's state is the machine's. Only Fire moves looplab, under m.mu,
	// and last is the node of the state looplab moved to, so the edges are
	// found without reading looplab's state under its own lock a second
	// time: its Event below checks the move against that state and refuses
	// any other.
	n := m.last
	if from != "" && n.state != from {
		return &InvalidEventError{Event: event, State: n.state}
	}
	e, err := m.choose(event, n)
	if err != nil {
		return err
	}
	entered, at := m.since.Load(), m.elapsed()
	// The time first, then the state (see Since).
	m.since.Store(at)
	// No looplab callback is registered, so its context carries nothing; a
	// fresh one can never be cancelled, which looplab needs.
	if err := m.fsm.Event(context.Background(), e.fsmEvent); err != nil {
		m.since.Store(entered)
		return m.refused(event, n.state, err)
	}
	m.last = e.to
	if len(m.obs) > 0 {
		t := Transition{
			Event: event, From: n.state, To: e.To, Guard: e.Guard, Phase: e.info, Cause: cause,
			Entered: m.epoch.Add(time.Duration(entered)), At: m.epoch.Add(time.Duration(at)), Edge: e.index,
		}
		for _, o := range m.obs {
			m.notify(ctx, o, t)
		}
	}
	return nil
}

// elapsed reads the clock: the time since epoch, in nanoseconds.
func (m *Machine) elapsed() int64 {
	if m.realClock {
		return int64(time.Since(m.epoch)) // the monotonic clock alone
	}
	return int64(m.clock.Since(m.epoch))
}

// refused turns looplab's refusal of an event into the machine's error. The
// guards chose an edge of the table, and looplab holds the same table, so it
// refuses only what its own rules forbid (an event fired while one is in
// transition, which the machine never does).
func (m *Machine) refused(event phases.Event, state phases.State, err error) error {
	var invalid fsm.InvalidEventError
	if errors.As(err, &invalid) {
		return &InvalidEventError{Event: event, State: state}
	}
	return fmt.Errorf("lifecycle: looplab/fsm refused %q in state %q: %w", event, state, err)
}

// choose picks the edge event takes from state, evaluating guards in table order.
func (m *Machine) choose(event phases.Event, state *stateNode) (*edge, error) {
	var refused []string
	for _, e := range state.out {
		if e.Event != event {
			continue
		}
		if e.Guard.Name == "" {
			return e, nil
		}
		ok, err := m.guard(e.Guard)
		if err != nil {
			return nil, err
		}
		if ok {
			return e, nil
		}
		refused = append(refused, e.Guard.String())
	}
	if refused == nil {
		return nil, &InvalidEventError{Event: event, State: state.state, Unknown: !m.events[event]}
	}
	return nil, &InvalidEventError{Event: event, State: state.state, Guards: refused}
}

func (m *Machine) guard(g phases.Guard) (ok bool, err error) {
	if g.Name == "" {
		return true, nil
	}
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Where: "guard " + g.Name, Value: v, Stack: debug.Stack()}
		}
	}()
	return m.guards[g.Name]() != g.Not, nil
}

func (m *Machine) notify(ctx context.Context, o Observer, t Transition) {
	defer func() {
		if v := recover(); v != nil {
			m.log.Error("lifecycle: observer panicked", "event", string(t.Event), "from", string(t.From), "to", string(t.To), "panic", v, "stack", string(debug.Stack()))
		}
	}()
	o.Transitioned(ctx, t)
}
