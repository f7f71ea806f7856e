package lifecycle

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/looplab/fsm"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/stargazer/lifecycle/phases"
)

// door is a small user table: a guarded "open" that goes to open when unlocked and
// to jammed otherwise.
var door = phases.Table{
	Name:    "door",
	Initial: "closed",
	States:  []phases.StateInfo{{Name: "closed"}, {Name: "open"}, {Name: "jammed", Terminal: true}},
	Guards:  []phases.GuardInfo{{Name: "unlocked", Doc: "the key turned"}},
	Transitions: []phases.Transition{
		{Event: "open", From: []phases.State{"closed"}, To: "open", Guard: phases.Guard{Name: "unlocked"}},
		{Event: "open", From: []phases.State{"closed"}, To: "jammed", Guard: phases.Guard{Name: "unlocked", Not: true}},
		{Event: "close", From: []phases.State{"open"}, To: "closed"},
	},
}

func newDoor(t testing.TB, unlocked *atomic.Bool, opts ...MachineOption) *Machine {
	t.Helper()
	opts = append([]MachineOption{
		WithGuard("unlocked", unlocked.Load),
		WithMachineTracerProvider(tracenoop.NewTracerProvider()),
		WithMachineMeterProvider(metricnoop.NewMeterProvider()),
	}, opts...)
	m, err := NewMachine(&door, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func TestGuardChoosesAmongAlternativesAndIsRecorded(t *testing.T) {
	var unlocked atomic.Bool
	var seen []Transition
	m := newDoor(t, &unlocked, WithMachineObserver(ObserverFunc(func(_ context.Context, tr Transition) { seen = append(seen, tr) })))

	unlocked.Store(true)
	if err := m.Fire(context.Background(), "open"); err != nil {
		t.Fatal(err)
	}
	if m.Current() != "open" {
		t.Fatalf("state %q, want open", m.Current())
	}
	if err := m.Fire(context.Background(), "close"); err != nil {
		t.Fatal(err)
	}
	unlocked.Store(false)
	if err := m.Fire(context.Background(), "open"); err != nil {
		t.Fatal(err)
	}
	if m.Current() != "jammed" {
		t.Fatalf("state %q, want jammed", m.Current())
	}
	if len(seen) != 3 {
		t.Fatalf("observed %d transitions, want 3", len(seen))
	}
	if g := seen[0].Guard.String(); g != "unlocked" {
		t.Errorf("first open decided by %q, want unlocked", g)
	}
	if g := seen[1].Guard.String(); g != "" {
		t.Errorf("close decided by %q, want no guard", g)
	}
	if g := seen[2].Guard.String(); g != "not unlocked" {
		t.Errorf("second open decided by %q, want \"not unlocked\"", g)
	}
}

func TestInvalidEventIsATypedErrorNamingEventAndState(t *testing.T) {
	var unlocked atomic.Bool
	m := newDoor(t, &unlocked)
	err := m.Fire(context.Background(), "close")
	var ie *InvalidEventError
	if !errors.As(err, &ie) || ie.Event != "close" || ie.State != "closed" || ie.Unknown {
		t.Fatalf("Fire(close) = %v, want InvalidEventError{close, closed}", err)
	}
	if !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("errors.Is(err, ErrInvalidEvent) = false")
	}
	if got := err.Error(); got != `lifecycle: event "close" is not valid in state "closed"` {
		t.Errorf("message %q", got)
	}
	err = m.Fire(context.Background(), "explode")
	if !errors.As(err, &ie) || !ie.Unknown {
		t.Fatalf("Fire(explode) = %v, want unknown-event error", err)
	}
	if m.Current() != "closed" {
		t.Fatalf("state changed to %q", m.Current())
	}
}

func TestGuardPanicFailsTheEventAndLeavesTheMachineUsable(t *testing.T) {
	var calls atomic.Int32
	m, err := NewMachine(&door,
		WithGuard("unlocked", func() bool {
			if calls.Add(1) == 1 {
				panic("lock jammed")
			}
			return true
		}),
		WithMachineTracerProvider(tracenoop.NewTracerProvider()),
		WithMachineMeterProvider(metricnoop.NewMeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	err = m.Fire(context.Background(), "open")
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Where != "guard unlocked" {
		t.Fatalf("Fire = %v, want PanicError in guard unlocked", err)
	}
	if m.Current() != "closed" {
		t.Fatalf("state %q after a panicking guard, want closed", m.Current())
	}
	if err := m.Fire(context.Background(), "open"); err != nil || m.Current() != "open" {
		t.Fatalf("machine stuck after panic: err=%v state=%q", err, m.Current())
	}
}

func TestObserverPanicDoesNotUndoOrBlockTheTransition(t *testing.T) {
	var unlocked atomic.Bool
	unlocked.Store(true)
	var after atomic.Int32
	m := newDoor(t, &unlocked,
		WithMachineObserver(ObserverFunc(func(context.Context, Transition) { panic("observer bug") })),
		WithMachineObserver(ObserverFunc(func(context.Context, Transition) { after.Add(1) })))
	if err := m.Fire(context.Background(), "open"); err != nil {
		t.Fatal(err)
	}
	if err := m.Fire(context.Background(), "close"); err != nil {
		t.Fatal(err)
	}
	if m.Current() != "closed" || after.Load() != 2 {
		t.Fatalf("state %q, later observer called %d times; want closed, 2", m.Current(), after.Load())
	}
}

func TestCancelledContextNeverWedgesTheMachine(t *testing.T) {
	var unlocked atomic.Bool
	unlocked.Store(true)
	m := newDoor(t, &unlocked)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// looplab/fsm would leave a machine in InTransitionError forever here.
	for i := 0; i < 3; i++ {
		if err := m.Fire(ctx, "open"); err != nil {
			t.Fatalf("open with cancelled ctx: %v", err)
		}
		if err := m.Fire(ctx, "close"); err != nil {
			t.Fatalf("close with cancelled ctx: %v", err)
		}
	}
}

func TestConcurrentEventsAreSerialised(t *testing.T) {
	var unlocked atomic.Bool
	unlocked.Store(true)
	var observed atomic.Int64
	var inObserver atomic.Int32
	m := newDoor(t, &unlocked, WithMachineObserver(ObserverFunc(func(context.Context, Transition) {
		if inObserver.Add(1) != 1 {
			t.Error("two transitions observed at once")
		}
		observed.Add(1)
		inObserver.Add(-1)
	})))
	var ok atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 100; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			ev := phases.Event("open")
			if g%2 == 1 {
				ev = "close"
			}
			for i := 0; i < 50; i++ {
				err := m.Fire(context.Background(), ev)
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ErrInvalidEvent):
				default:
					t.Errorf("unexpected error: %v", err)
				}
			}
		}(g)
	}
	wg.Wait()
	if ok.Load() != observed.Load() {
		t.Fatalf("%d successful events, %d observed transitions", ok.Load(), observed.Load())
	}
}

func TestCurrentAndSinceAnswerDuringAFireWithTheTransitionsStateAndTime(t *testing.T) {
	var unlocked atomic.Bool
	unlocked.Store(true)
	clk := clockwork.NewFakeClock()
	var m *Machine
	var prev time.Time
	m = newDoor(t, &unlocked, WithMachineClock(clk), WithMachineObserver(ObserverFunc(func(_ context.Context, tr Transition) {
		// Fire is in progress: Current and Since must not wait for it.
		if m.Current() != tr.To || !m.Since().Equal(tr.At) {
			t.Errorf("during %s: Current %q, Since %v; want %q, %v", tr.Event, m.Current(), m.Since(), tr.To, tr.At)
		}
		if !tr.Entered.Equal(prev) {
			t.Errorf("%s entered %v, want the previous transition's %v", tr.Event, tr.Entered, prev)
		}
		prev = tr.At
	})))
	prev = m.Since()
	if !prev.Equal(clk.Now()) || m.Current() != door.Initial {
		t.Fatalf("new machine: %q since %v, want %q since %v", m.Current(), prev, door.Initial, clk.Now())
	}
	// A reader on another goroutine all along: with -race, it shows that no
	// state it reads is written again.
	start := clk.Now()
	done, reading, stopped := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for n := 0; ; n++ {
			if n == 1 {
				close(reading)
			}
			select {
			case <-done:
				return
			default:
			}
			if s := m.Current(); s != "closed" && s != "open" {
				t.Errorf("Current %q", s)
			}
			if since := m.Since(); since.Before(start) {
				t.Errorf("Since %v before the machine was made", since)
			}
		}
	}()
	<-reading
	for i := range 80 {
		clk.Advance(time.Second)
		ev := phases.Event("open")
		if i%2 == 1 {
			ev = "close"
		}
		if err := m.Fire(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		if !m.Since().Equal(clk.Now()) {
			t.Fatalf("after %s: Since %v, want %v", ev, m.Since(), clk.Now())
		}
	}
	close(done)
	<-stopped
}

func TestTransitionSpanCarriesContractAttributes(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	m, err := NewMachine(phases.Lifecycle(),
		WithGuard(phases.GuardRedisRequired, func() bool { return true }),
		WithGuard(phases.GuardFailing, func() bool { return false }),
		WithGuard(phases.GuardDrainDelay, func() bool { return false }),
		WithMachineTracerProvider(tp),
		WithMachineMeterProvider(metricnoop.NewMeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, root := tp.Tracer("test").Start(context.Background(), "root")
	if err := m.Fire(ctx, phases.Connect); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("connection refused")
	if err := m.FireWithCause(ctx, phases.PingFailed, boom); err != nil {
		t.Fatal(err)
	}
	root.End()
	spans := rec.Ended()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3", len(spans))
	}
	ping := spans[1]
	if ping.Parent().SpanID() != root.SpanContext().SpanID() {
		t.Errorf("transition span is not a child of the span in ctx")
	}
	want := map[attribute.Key]attribute.Value{
		AttrEvent: attribute.StringValue("ping_failed"),
		AttrFrom:  attribute.StringValue("connecting"),
		AttrTo:    attribute.StringValue("failed"),
		AttrGuard: attribute.StringValue("redis_required"),
	}
	got := map[attribute.Key]attribute.Value{}
	for _, kv := range ping.Attributes() {
		got[kv.Key] = kv.Value
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k].String(), v.String())
		}
	}
	if p, ok := attrOf(spans[0].Attributes(), AttrPhase); !ok || p.AsInt64() != 2 {
		t.Errorf("connect span lifecycle.phase = %v, want 2", p.String())
	}
	if _, ok := attrOf(ping.Attributes(), AttrPhase); ok {
		t.Errorf("a transition to failed (no phase number) has lifecycle.phase")
	}
	if ping.Status().Code != codes.Error {
		t.Errorf("span with a cause has status %v, want Error", ping.Status().Code)
	}
}

func attrOf(kvs []attribute.KeyValue, k attribute.Key) (attribute.Value, bool) {
	for _, kv := range kvs {
		if kv.Key == k {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func TestNewMachineNamesAGuardWithoutFunction(t *testing.T) {
	_, err := NewMachine(&door)
	if err == nil || err.Error() != `lifecycle: machine "door": guard "unlocked" has no function (use WithGuard)` {
		t.Fatalf("NewMachine = %v", err)
	}
}

// The transition benchmarks compare the machine with a raw looplab/fsm Event on
// the same two-state toggle, in one run. See BENCHMARKS.md.

var toggle = phases.Table{
	Name:    "toggle",
	Initial: "a",
	States:  []phases.StateInfo{{Name: "a", Number: 1}, {Name: "b", Number: 2}},
	Transitions: []phases.Transition{
		{Event: "go", From: []phases.State{"a"}, To: "b"},
		{Event: "back", From: []phases.State{"b"}, To: "a"},
	},
}

func BenchmarkTransitionRawLooplab(b *testing.B) {
	f := fsm.NewFSM("a", fsm.Events{{Name: "go", Src: []string{"a"}, Dst: "b"}, {Name: "back", Src: []string{"b"}, Dst: "a"}}, nil)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ev := "go"
		if i%2 == 1 {
			ev = "back"
		}
		if err := f.Event(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}

// rawWithSpan is the floor for a recording tracer: a raw looplab/fsm Event on
// the toggle plus one span per transition, with the name and attributes of the
// machine's transition span written out by hand and built once per edge, as the
// cheapest hand-written instrumentation would have them.
// TestRawLooplabWithSpanEmitsTheMachinesSpans keeps it honest.
type rawWithSpan struct {
	fsm    *fsm.FSM
	tracer trace.Tracer
	events [2]string
	names  [2]string
	opts   [2][]trace.SpanStartOption
}

func newRawWithSpan(tp trace.TracerProvider) *rawWithSpan {
	edge := func(event, from, to string, phase int) []trace.SpanStartOption {
		return []trace.SpanStartOption{trace.WithAttributes(
			attribute.String("lifecycle.machine", "toggle"),
			attribute.String("lifecycle.event", event),
			attribute.String("lifecycle.to", to),
			attribute.Int("lifecycle.phase", phase),
			attribute.String("lifecycle.from", from),
		)}
	}
	return &rawWithSpan{
		fsm:    fsm.NewFSM("a", fsm.Events{{Name: "go", Src: []string{"a"}, Dst: "b"}, {Name: "back", Src: []string{"b"}, Dst: "a"}}, nil),
		tracer: tp.Tracer(ScopeName),
		events: [2]string{"go", "back"},
		names:  [2]string{"transition go", "transition back"},
		opts:   [2][]trace.SpanStartOption{edge("go", "a", "b", 2), edge("back", "b", "a", 1)},
	}
}

// fire takes edge i (0: go, 1: back), its span a child of ctx's.
func (r *rawWithSpan) fire(ctx context.Context, i int) error {
	if err := r.fsm.Event(context.Background(), r.events[i]); err != nil {
		return err
	}
	_, span := r.tracer.Start(ctx, r.names[i], r.opts[i]...)
	span.End()
	return nil
}

func TestRawLooplabWithSpanEmitsTheMachinesSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	m, err := NewMachine(&toggle, WithMachineTracerProvider(tp), WithMachineMeterProvider(metricnoop.NewMeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	raw := newRawWithSpan(tp)
	ctx, root := tp.Tracer("bench").Start(context.Background(), "root")
	defer root.End()
	for i, ev := range []phases.Event{"go", "back"} {
		if err := m.Fire(ctx, ev); err != nil {
			t.Fatal(err)
		}
		if err := raw.fire(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	ended := rec.Ended()
	if len(ended) != 4 {
		t.Fatalf("%d spans ended, want 4", len(ended))
	}
	for i := 0; i < 4; i += 2 {
		machine, floor := ended[i], ended[i+1]
		if machine.Name() != floor.Name() {
			t.Errorf("floor span %q, machine span %q", floor.Name(), machine.Name())
		}
		if machine.InstrumentationScope() != floor.InstrumentationScope() {
			t.Errorf("floor scope %v, machine scope %v", floor.InstrumentationScope(), machine.InstrumentationScope())
		}
		if floor.Parent().SpanID() != root.SpanContext().SpanID() || machine.Parent().SpanID() != root.SpanContext().SpanID() {
			t.Errorf("%s: not both children of the root", machine.Name())
		}
		ma, fa := attribute.NewSet(machine.Attributes()...), attribute.NewSet(floor.Attributes()...)
		if !ma.Equals(&fa) {
			t.Errorf("%s: floor attributes %v, machine attributes %v", machine.Name(), fa.Encoded(attribute.DefaultEncoder()), ma.Encoded(attribute.DefaultEncoder()))
		}
	}
}

func benchMachine(b *testing.B, tp trace.TracerProvider) {
	m, err := NewMachine(&toggle, WithMachineTracerProvider(tp), WithMachineMeterProvider(metricnoop.NewMeterProvider()))
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx, root := tp.Tracer("bench").Start(context.Background(), "root")
	defer root.End()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ev := phases.Event("go")
		if i%2 == 1 {
			ev = "back"
		}
		if err := m.Fire(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTransitionMachineNoopTracer(b *testing.B) {
	benchMachine(b, tracenoop.NewTracerProvider())
}

// BenchmarkTransitionRawLooplabWithSpan is the floor of
// BenchmarkTransitionMachineRecordingTracer: a raw looplab/fsm Event plus one
// span with the machine's span's name and attributes, on the same provider.
func BenchmarkTransitionRawLooplabWithSpan(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer tp.Shutdown(context.Background())
	r := newRawWithSpan(tp)
	ctx, root := tp.Tracer("bench").Start(context.Background(), "root")
	defer root.End()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := r.fire(ctx, i%2); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTransitionMachineRecordingTracer(b *testing.B) {
	// A recording SDK provider with no exporter: the span is built and ended,
	// as it is before a batch exporter takes it.
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer tp.Shutdown(context.Background())
	benchMachine(b, tp)
}

func TestNewMachineKeepsItsOwnTableWhenTheCallersChanges(t *testing.T) {
	var unlocked atomic.Bool
	table := door.Clone()
	m, err := NewMachine(table, WithGuard("unlocked", unlocked.Load),
		WithMachineTracerProvider(tracenoop.NewTracerProvider()),
		WithMachineMeterProvider(metricnoop.NewMeterProvider()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	table.Name = "changed"
	table.Transitions[2].To = "jammed"
	got := m.Table()
	if got.Name != "door" || got.Transitions[2].To != "closed" {
		t.Errorf("Table() = %q with close going to %q after the caller changed its table; want door's, close to closed",
			got.Name, got.Transitions[2].To)
	}
}
