package e2e

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/process"
)

// Deadlines. Export is batched and the machine has two busy cores: generous, but
// each is a deadline, never a sleep.
const (
	bootTimeout  = 30 * time.Second // demo start to readiness
	exitTimeout  = 30 * time.Second // SIGTERM (or a failing boot) to exit
	traceTimeout = 30 * time.Second // exit to the traces being complete in Jaeger
)

// slowPhase and slowDelay make one boot phase visibly slow in the clean run, so the
// test can check that phase spans carry real durations.
const (
	slowPhase = phases.LoadingModules
	slowDelay = 200 * time.Millisecond
)

// TestDemoLifecycleIsReadableInJaeger runs cmd/demo against a real redis-server and
// a real Jaeger, and checks what an operator reads in Jaeger: the boot and shutdown
// traces of a clean stop, and the single trace of a boot that fails.
func TestDemoLifecycleIsReadableInJaeger(t *testing.T) {
	// First, so a machine without redis-server skips (or, with CI=true, fails)
	// before building anything.
	r := redistest.Server(t)

	jaegerBin := os.Getenv("E2E_JAEGER_BIN")
	if jaegerBin == "" {
		// In its own module (jaeger/go.mod), so Jaeger builds with exactly the
		// dependencies of its release: merged with the library's newer OTel it does
		// not compile.
		jaegerBin = proctest.BuildIn(t, "jaeger", "github.com/jaegertracing/jaeger/cmd/jaeger")
	}
	// In the library's module: the demo as shipped, with the library's go.sum.
	demoBin := proctest.Build(t, proctest.Module+"/cmd/demo")

	j := startJaeger(t, jaegerBin)
	run := strconv.FormatInt(time.Now().UnixNano()%1e9, 36) + strconv.Itoa(os.Getpid()%1000)
	t.Logf("jaeger UI and query API on http://%s (while the test runs); redis on %s", j.queryHTTP, r.Addr())

	t.Run("CleanStopGivesABootTraceAndALinkedShutdownTrace", func(t *testing.T) {
		service, instance := "e2e-clean-"+run, "e2e-clean-1"
		demo := startDemo(t, demoBin, service, demoEnv(j, r, service, instance,
			"DEMO_PHASE_DELAY="+string(slowPhase)+"="+slowDelay.String(),
			// Export metrics while running, not only at exit: the state gauge is
			// checked in running (the export at exit no longer has it, see README.md).
			"OTEL_METRIC_EXPORT_INTERVAL=500",
		))
		waitRunning(t, demo)

		eventually(t, 15*time.Second, "the running instance's metrics in Jaeger's log (OTLP, debug exporter)", func() error {
			exports := exportedMetrics(j.Output(), service)
			if len(exports) == 0 {
				return fmt.Errorf("no metrics export of service %s yet", service)
			}
			return checkRunningMetrics(exports[len(exports)-1])
		}, func() string { return j.Tail(40) })

		if err := demo.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("SIGTERM to the demo (pid %d): %v", demo.PID(), err)
		}
		if code := demo.Wait(t); code != process.ExitOK {
			t.Fatalf("demo exited %d after SIGTERM, want %d\n%s", code, process.ExitOK, demo.Tail(40))
		}

		eventually(t, 15*time.Second, "the stopped instance's last metrics in Jaeger's log", func() error {
			exports := exportedMetrics(j.Output(), service)
			if len(exports) == 0 {
				return fmt.Errorf("no metrics export of service %s", service)
			}
			return checkStoppedMetrics(exports[len(exports)-1])
		}, func() string { return j.Tail(40) })

		var boot, shutdown apiTrace
		eventually(t, traceTimeout, "the boot and shutdown traces in Jaeger", func() error {
			traces, err := j.traces(service)
			if err != nil {
				return err
			}
			boot, shutdown, err = bootAndShutdown(traces)
			if err != nil {
				return err
			}
			if err := checkCleanBoot(boot, service, instance); err != nil {
				return fmt.Errorf("boot trace %s: %w", boot.TraceID, err)
			}
			if err := checkCleanShutdown(shutdown, boot, service, instance); err != nil {
				return fmt.Errorf("shutdown trace %s: %w", shutdown.TraceID, err)
			}
			return nil
		}, func() string { return demo.Tail(40) })
		dump(t, "clean-boot", boot)
		dump(t, "clean-shutdown", shutdown)
	})

	t.Run("FailingPhaseGivesOneTraceThatEndsInFailed", func(t *testing.T) {
		service, instance := "e2e-fail-"+run, "e2e-fail-1"
		demo := startDemo(t, demoBin, service, demoEnv(j, r, service, instance,
			"DEMO_FAIL_PHASE="+string(phases.BuildingAdapters),
		))
		if code := demo.Wait(t); code != process.ExitFailed {
			t.Fatalf("demo with DEMO_FAIL_PHASE=%s exited %d, want %d\n%s", phases.BuildingAdapters, code, process.ExitFailed, demo.Tail(40))
		}

		var boot apiTrace
		eventually(t, traceTimeout, "the failed boot's trace in Jaeger", func() error {
			traces, err := j.traces(service)
			if err != nil {
				return err
			}
			if len(traces) != 1 {
				return fmt.Errorf("%d traces, want 1: a failed boot unwinds inside its boot trace", len(traces))
			}
			boot = traces[0]
			return checkFailedBoot(boot, service, instance)
		}, func() string { return demo.Tail(40) })
		dump(t, "failed-boot", boot)
	})
}

// startDemo starts the demo of service with env; its waits last exitTimeout.
func startDemo(t *testing.T, bin, service string, env []string) *proctest.Proc {
	t.Helper()
	return proctest.Start(t, proctest.Cmd{Bin: bin, Name: service, Env: env, Timeout: exitTimeout})
}

// demoEnv is the demo's environment: the given variables and the ones that
// tie it to r and j. Nothing else of the test's reaches it (proctest adds
// PATH, HOME, TMPDIR and GOCOVERDIR), so no OTEL_*, SG_*, DEMO_* or REDIS_URL
// of the developer's.
func demoEnv(j *jaegerServer, r *redistest.Srv, service, instance string, extra ...string) []string {
	env := []string{
		"REDIS_URL=" + r.URL(),
		"SG_HEALTH_PORT=0",
		"SG_HEALTH_HOST=127.0.0.1",
		"SG_BOOT_JITTER=0",
		"SG_SERVICE_NAME=" + service,
		"SG_INSTANCE_ID=" + instance,
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + j.otlpHTTP,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
	}
	return append(env, extra...)
}

var bootCompleted = regexp.MustCompile(`msg="boot completed".* health_addr=(\S+)`)

// waitRunning waits until the demo logged the end of its boot and its /readyz
// answers 200 (only in running).
func waitRunning(t *testing.T, demo *proctest.Proc) {
	t.Helper()
	var health string
	err := poll(bootTimeout, demo.Exited, func() error {
		if health == "" {
			m := bootCompleted.FindStringSubmatch(demo.Output())
			if m == nil {
				return errors.New(`no "boot completed" line with health_addr in the demo's log`)
			}
			health = m[1]
		}
		code, body, err := httpGet("http://" + health + "/readyz")
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("GET /readyz: %d %s", code, body)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("demo not running: %v\n%s", err, demo.Tail(40))
	}
}

// bootAndShutdown picks the boot and the shutdown trace of one run by their roots.
func bootAndShutdown(traces []apiTrace) (boot, shutdown apiTrace, err error) {
	var nb, ns int
	for _, tr := range traces {
		root, ok := tr.root()
		switch {
		case !ok:
		case root.OperationName == lifecycle.SpanBoot:
			boot, nb = tr, nb+1
		case root.OperationName == lifecycle.SpanShutdown:
			shutdown, ns = tr, ns+1
		}
	}
	if nb != 1 || ns != 1 {
		return boot, shutdown, fmt.Errorf("%d traces: %d rooted at %s and %d at %s, want one of each",
			len(traces), nb, lifecycle.SpanBoot, ns, lifecycle.SpanShutdown)
	}
	return boot, shutdown, nil
}

// path walks phases.Lifecycle from state from along the edges labelled labels
// ("event" or "event [guard]"), so the expectations come from the table that
// drives the machine.
func path(from phases.State, labels ...string) []phases.Transition {
	var out []phases.Transition
	for _, l := range labels {
		event, _, _ := strings.Cut(l, " ")
		var next *phases.Transition
		for _, tr := range phases.Lifecycle().Alternatives(phases.Event(event), from) {
			if tr.Label() == l {
				tr.From = []phases.State{from}
				next = &tr
				break
			}
		}
		if next == nil {
			panic(fmt.Sprintf("e2e: no edge %q from %q in phases.Lifecycle", l, from))
		}
		out = append(out, *next)
		from = next.To
	}
	return out
}

// bootPath is a boot that reaches running with Redis answering its ping.
func bootPath() []phases.Transition {
	var labels []string
	for _, s := range phases.Lifecycle().StatesIn(phases.GroupBoot) {
		ev, _ := phases.NextEvent(phases.Lifecycle(), s)
		if s == phases.Connecting {
			ev = phases.PingOK // connecting's event depends on the ping; Redis answers here
		}
		labels = append(labels, string(ev))
	}
	return path(phases.Lifecycle().Initial, labels...)
}

// shutdownPath is the shutdown steps, entered by event from state from, ending as
// the guard on cleaned_up decides.
func shutdownPath(from phases.State, event phases.Event, failing bool) []phases.Transition {
	labels := []string{string(event)}
	if event == phases.Stop && from == phases.Running {
		// The demo runs without a drain delay: stop goes straight to the steps.
		labels[0] = phases.Transition{Event: phases.Stop, Guard: phases.Guard{Name: phases.GuardDrainDelay, Not: true}}.Label()
	}
	for _, s := range phases.Lifecycle().StatesIn(phases.GroupShutdown) {
		ev, _ := phases.NextEvent(phases.Lifecycle(), s)
		labels = append(labels, string(ev))
	}
	last := phases.Transition{Event: phases.CleanedUp, Guard: phases.Guard{Name: phases.GuardFailing, Not: !failing}}
	labels[len(labels)-1] = last.Label()
	return path(from, labels...)
}

// checkCleanBoot checks the boot trace of a clean run.
func checkCleanBoot(tr apiTrace, service, instance string) error {
	root, err := checkRoot(tr, lifecycle.SpanBoot, service, instance)
	if err != nil {
		return err
	}
	if len(root.References) != 0 {
		return fmt.Errorf("%s has references %v, want none: a boot starts a new trace", lifecycle.SpanBoot, root.References)
	}
	if err := wantTags(root, lifecycle.AttrOutcome, "running", lifecycle.AttrDegraded, "false"); err != nil {
		return err
	}
	if isError(root) {
		return fmt.Errorf("%s is marked as an error", lifecycle.SpanBoot)
	}
	trans, err := checkTransitions(tr, root, bootPath())
	if err != nil {
		return err
	}
	phaseSpans, err := checkPhases(tr, root, phases.Lifecycle().StatesIn(phases.GroupBoot), trans)
	if err != nil {
		return err
	}
	if d := time.Duration(phaseSpans[slowPhase].Duration) * time.Microsecond; d < slowDelay {
		return fmt.Errorf("span %q lasted %s, want >= %s (DEMO_PHASE_DELAY)", "phase "+slowPhase, d, slowDelay)
	}
	for _, s := range tr.Spans {
		if isError(s) {
			return fmt.Errorf("span %q is marked as an error in a clean boot", s.OperationName)
		}
	}
	return within(root, tr.Spans)
}

// checkCleanShutdown checks the shutdown trace of a clean run, linked to boot.
func checkCleanShutdown(tr, boot apiTrace, service, instance string) error {
	root, err := checkRoot(tr, lifecycle.SpanShutdown, service, instance)
	if err != nil {
		return err
	}
	bootRoot, _ := boot.root()
	linked := false
	for _, r := range root.References {
		if r.RefType == "FOLLOWS_FROM" && r.TraceID == boot.TraceID && r.SpanID == bootRoot.SpanID {
			linked = true
		}
	}
	if !linked {
		return fmt.Errorf("%s references %v, want a link (FOLLOWS_FROM) to the boot span %s/%s",
			lifecycle.SpanShutdown, root.References, boot.TraceID, bootRoot.SpanID)
	}
	if err := wantTags(root, lifecycle.AttrOutcome, "stopped", lifecycle.AttrEvent, "stop"); err != nil {
		return err
	}
	trans, err := checkTransitions(tr, root, shutdownPath(phases.Running, phases.Stop, false))
	if err != nil {
		return err
	}
	phaseSpans, err := checkPhases(tr, root, phases.Lifecycle().StatesIn(phases.GroupShutdown), trans)
	if err != nil {
		return err
	}
	for _, s := range phases.Lifecycle().StatesIn(phases.GroupShutdown) {
		// Everything started in a full boot, so no step is skipped.
		if err := wantTags(phaseSpans[s], lifecycle.AttrSkipped, "false"); err != nil {
			return err
		}
	}
	for _, s := range tr.Spans {
		if isError(s) {
			return fmt.Errorf("span %q is marked as an error in a clean shutdown", s.OperationName)
		}
	}
	return within(root, tr.Spans)
}

// checkFailedBoot checks the one trace of a boot whose building_adapters phase
// fails: the failing work and the fail transition are errors, the unwind runs in
// the same trace and skips what never started, and the last transition is
// cleaned_up [failing] into failed.
func checkFailedBoot(tr apiTrace, service, instance string) error {
	root, err := checkRoot(tr, lifecycle.SpanBoot, service, instance)
	if err != nil {
		return err
	}
	if !isError(root) {
		return fmt.Errorf("%s is not marked as an error (tags %v)", lifecycle.SpanBoot, root.Tags)
	}
	if err := wantTags(root, lifecycle.AttrOutcome, "failed"); err != nil {
		return err
	}
	boot := bootPath()
	var upTo []phases.Transition // the boot edges taken before building_adapters failed
	for _, e := range boot {
		if e.From[0] == phases.BuildingAdapters {
			break
		}
		upTo = append(upTo, e)
	}
	want := append(upTo, shutdownPath(phases.BuildingAdapters, phases.Fail, true)...)
	trans, err := checkTransitions(tr, root, want)
	if err != nil {
		return err
	}
	failSpan := trans[len(upTo)]
	if !isError(failSpan) {
		return fmt.Errorf("span %q (from %s) is not marked as an error", failSpan.OperationName, phases.BuildingAdapters)
	}
	last := trans[len(trans)-1]
	if err := wantTags(last, lifecycle.AttrTo, string(phases.Failed), lifecycle.AttrGuard, phases.GuardFailing); err != nil {
		return err
	}

	states := append(append([]phases.State{}, phases.Lifecycle().StatesIn(phases.GroupBoot)[:6]...), phases.Lifecycle().StatesIn(phases.GroupShutdown)...)
	phaseSpans, err := checkPhases(tr, root, states, trans)
	if err != nil {
		return err
	}
	for _, s := range states {
		sp := phaseSpans[s]
		if failed := s == phases.BuildingAdapters; isError(sp) != failed {
			return fmt.Errorf("span %q: error=%v, want %v", sp.OperationName, isError(sp), failed)
		}
	}
	if len(tr.named("phase "+string(phases.Starting))) != 0 {
		return fmt.Errorf("a %q span exists: no phase after the failing one may run", "phase "+phases.Starting)
	}
	// Steps whose work never started are skipped: no daemons, no health server, no
	// OnStart; the registry entry existed from phase 2, so it is removed.
	skipped := map[phases.State]string{
		phases.StoppingDaemons: "true", phases.StoppingHealth: "true",
		phases.Deregistering: "false", phases.CleaningUp: "true",
	}
	for s, want := range skipped {
		if err := wantTags(phaseSpans[s], lifecycle.AttrSkipped, want); err != nil {
			return err
		}
	}
	return within(root, tr.Spans)
}

// checkRoot finds the root of tr, checks its name, and checks that the process
// carries service.name and service.instance.id.
func checkRoot(tr apiTrace, name, service, instance string) (apiSpan, error) {
	root, ok := tr.root()
	if !ok {
		return root, errors.New("no root span")
	}
	if root.OperationName != name {
		return root, fmt.Errorf("root span %q, want %q", root.OperationName, name)
	}
	p := tr.process(root)
	if p.ServiceName != service {
		return root, fmt.Errorf("process service name %q, want %q", p.ServiceName, service)
	}
	if got := tagString(p.Tags, "service.instance.id"); got != instance {
		return root, fmt.Errorf("process tag service.instance.id %q, want %q (process tags %v)", got, instance, p.Tags)
	}
	return root, nil
}

// checkTransitions checks that tr has one "transition <label>" span per edge of
// want, each a child of root with the edge's attributes, and that they happened
// in want's order. It returns them in that order.
func checkTransitions(tr apiTrace, root apiSpan, want []phases.Transition) ([]apiSpan, error) {
	spans := tr.named("transition ")
	if len(spans) != len(want) {
		names := make([]string, len(spans))
		for i, s := range spans {
			names[i] = s.OperationName
		}
		return nil, fmt.Errorf("%d transition spans %q, want %d", len(spans), names, len(want))
	}
	// Order by the chain from -> to rather than by start time alone: Jaeger keeps
	// microseconds, and two transitions may share one.
	byFrom := map[string]apiSpan{}
	for _, s := range spans {
		byFrom[tagString(s.Tags, string(lifecycle.AttrFrom))] = s
	}
	out := make([]apiSpan, len(want))
	for i, e := range want {
		s, ok := byFrom[string(e.From[0])]
		if !ok {
			return nil, fmt.Errorf("transition %d: no span with %s=%s (want %q)", i, lifecycle.AttrFrom, e.From[0], "transition "+e.Label())
		}
		if s.OperationName != "transition "+e.Label() {
			return nil, fmt.Errorf("transition %d from %s: span %q, want %q", i, e.From[0], s.OperationName, "transition "+e.Label())
		}
		info, _ := phases.Lifecycle().State(e.To)
		kv := []any{lifecycle.AttrEvent, string(e.Event), lifecycle.AttrFrom, string(e.From[0]), lifecycle.AttrTo, string(e.To),
			lifecycle.AttrPhase, "", lifecycle.AttrPhaseLabel, info.Label, lifecycle.AttrGuard, e.Guard.String(),
			lifecycle.AttrMachine, phases.Lifecycle().Name}
		if info.Number > 0 {
			kv[7] = strconv.Itoa(info.Number)
		}
		if err := wantTags(s, kv...); err != nil {
			return nil, err
		}
		if err := childOf(s, root); err != nil {
			return nil, err
		}
		if i > 0 && s.StartTime < out[i-1].StartTime {
			return nil, fmt.Errorf("span %q starts before %q", s.OperationName, out[i-1].OperationName)
		}
		out[i] = s
	}
	return out, nil
}

// checkPhases checks that tr has one "phase <state>" span per state, each a child
// of root tagged with its state and phase, that they ran in order, and that each
// one's work ended before the transition out of its state. It returns them by state.
func checkPhases(tr apiTrace, root apiSpan, states []phases.State, trans []apiSpan) (map[phases.State]apiSpan, error) {
	leaving := map[string]apiSpan{}
	for _, s := range trans {
		leaving[tagString(s.Tags, string(lifecycle.AttrFrom))] = s
	}
	out := map[phases.State]apiSpan{}
	var prev apiSpan
	for i, st := range states {
		spans := tr.named("phase " + string(st))
		if len(spans) != 1 {
			return nil, fmt.Errorf("%d spans %q, want 1", len(spans), "phase "+st)
		}
		s := spans[0]
		info, _ := phases.Lifecycle().State(st)
		kv := []any{lifecycle.AttrState, string(st), lifecycle.AttrPhase, "", lifecycle.AttrPhaseLabel, info.Label}
		if info.Number > 0 {
			kv[3] = strconv.Itoa(info.Number)
		}
		if err := wantTags(s, kv...); err != nil {
			return nil, err
		}
		if err := childOf(s, root); err != nil {
			return nil, err
		}
		if i > 0 && s.StartTime < prev.StartTime {
			return nil, fmt.Errorf("span %q starts before %q", s.OperationName, prev.OperationName)
		}
		// 1µs of slack: Jaeger rounds start and duration separately.
		if next, ok := leaving[string(st)]; ok && s.StartTime+s.Duration > next.StartTime+1 {
			return nil, fmt.Errorf("span %q ends after %q starts", s.OperationName, next.OperationName)
		}
		out[st], prev = s, s
	}
	return out, nil
}

// wantTags checks span tags given as key, value pairs; a value "" means the tag
// must be absent.
func wantTags(s apiSpan, kv ...any) error {
	for i := 0; i < len(kv); i += 2 {
		key, want := fmt.Sprint(kv[i]), kv[i+1].(string)
		_, present := tag(s.Tags, key)
		switch got := tagString(s.Tags, key); {
		case want == "" && present:
			return fmt.Errorf("span %q has tag %s=%s, want none", s.OperationName, key, got)
		case got != want:
			return fmt.Errorf("span %q: tag %s=%q, want %q", s.OperationName, key, got, want)
		}
	}
	return nil
}

// childOf checks that s is a child of parent.
func childOf(s, parent apiSpan) error {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" && r.SpanID == parent.SpanID && r.TraceID == parent.TraceID {
			return nil
		}
	}
	return fmt.Errorf("span %q is not a child of %q (references %v)", s.OperationName, parent.OperationName, s.References)
}

// within checks that every span lies inside root's time span (1µs of slack).
func within(root apiSpan, spans []apiSpan) error {
	for _, s := range spans {
		if s.StartTime+1 < root.StartTime || s.StartTime+s.Duration > root.StartTime+root.Duration+1 {
			return fmt.Errorf("span %q [%d +%dµs] is outside %q [%d +%dµs]",
				s.OperationName, s.StartTime, s.Duration, root.OperationName, root.StartTime, root.Duration)
		}
	}
	return nil
}
