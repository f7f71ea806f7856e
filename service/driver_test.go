package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/stargazer/lifecycle/phases"
)

// The driver's whole behaviour is decide: every driver state against every
// request, as a table. A cell reads
//
//	=                    the request is accepted and changes nothing
//	-                    the request is refused, and changes nothing
//	stage reason acts    the driver moves there; acts are what follows:
//	                     i interrupt the work in progress, d begin the drain
//	                     delay, a unwind on a goroutine of the instance's own
//	                     (after the delay, with d), u unwind on the caller's
//	                     goroutine, w wait for the end
//
// A driver state is a stage, a stop reason, and the machine's state at that
// moment: a booted or serving instance may be in rotation, drained by an
// operator, or pulling.
var driverStates = []struct {
	name    string
	stage   stage
	reason  reason
	machine phases.State // the machine's state
}{
	{"created", created, noStop, phases.Init},
	{"created, stop asked", created, stopAsked, phases.Init},
	{"booting", booting, noStop, phases.Configuring},
	{"booting, stop asked", booting, stopAsked, phases.Configuring},
	{"booted", booted, noStop, phases.Running},
	{"booted, drained", booted, noStop, phases.Draining},
	{"serving", serving, noStop, phases.Running},
	{"serving, drained", serving, noStop, phases.Draining},
	{"serving, pulling", serving, noStop, phases.Pulling},
	{"delaying in Run", delayingRun, stopAsked, phases.Draining},
	{"delaying in Run, restart", delayingRun, restartAsked, phases.Draining},
	{"delaying after Boot", delayingBooted, stopAsked, phases.Draining},
	{"unwinding", unwinding, stopAsked, phases.StoppingHealth},
	{"unwinding, failed", unwinding, failure, phases.StoppingHealth},
	{"done", done, stopAsked, phases.Stopped},
	{"done, failed", done, failure, phases.Failed},
}

// conditionsOf are the conditions of a driver state in the lifecycle table.
func conditionsOf(machine phases.State, delay, byRun, bootRan bool) conditions {
	t := phases.Lifecycle()
	return conditions{drainDelay: delay, role: t.Role(machine), restart: len(t.Alternatives(phases.Restart, machine)) > 0, byRun: byRun, bootRan: bootRan}
}

// driverRequests are the requests, with the conditions that change what
// they do. A second stop is a stop in a state where a stop was asked; the
// context of Boot or Run ending is a stop (they call RequestStop), which
// TestCancellingRunsContextIsAStop shows.
var driverRequests = []struct {
	name  string
	req   request
	delay bool // a drain delay is set
	byRun bool // the boot is Run's
}{
	{"stop", reqStop, false, false},
	{"stop, drain delay", reqStop, true, false},
	{"Shutdown", reqShutdown, false, false},
	{"restart", reqRestart, false, false},
	{"restart, drain delay", reqRestart, true, false},
	{"drain", reqDrain, false, false},
	{"undrain", reqUndrain, false, false},
	{"Run returns", reqRunReturned, false, false},
	{"Run fails", reqRunFailed, false, false},
	{"boot phase fails", reqPhaseFailed, false, false},
	{"Boot", reqBoot, false, false},
	{"Run", reqRun, false, false},
	{"boot over (Boot)", reqBootOver, false, false},
	{"boot over (Run)", reqBootOver, false, true},
	{"boot ended in failed", reqBootEnded, false, false},
	{"delay over", reqDelayOver, false, false},
	{"unwound", reqUnwound, false, false},
}

// driverTable: for each driver state, the cell of each request, in the order
// of driverRequests.
var driverTable = map[string][]string{
	//                          stop                    stop, drain delay               Shutdown                restart                    restart, drain delay               drain undrain Run returns             Run fails               phase fails             Boot                  Run              boot over (Boot)        boot over (Run)         boot ended     delay over              unwound
	"created":                  {"created stop", "created stop", "unwinding stop a", "-", "-", "-", "-", "-", "-", "-", "booting none", "booting none", "-", "-", "-", "-", "-"},
	"created, stop asked":      {"=", "=", "unwinding stop a", "-", "-", "-", "-", "-", "-", "-", "booting stop", "booting stop", "-", "-", "-", "-", "-"},
	"booting":                  {"booting stop i", "booting stop i", "booting stop i", "-", "-", "-", "-", "-", "-", "unwinding failure u", "-", "-", "booted none", "serving none", "done failure", "-", "-"},
	"booting, stop asked":      {"= i", "= i", "= i", "-", "-", "-", "-", "-", "-", "unwinding failure u", "-", "-", "unwinding stop u", "unwinding stop u", "done failure", "-", "-"},
	"booted":                   {"unwinding stop a", "delayingBooted stop da", "unwinding stop a", "unwinding restart a", "delayingBooted restart da", "=", "=", "-", "-", "-", "-", "serving none", "-", "-", "-", "-", "-"},
	"booted, drained":          {"unwinding stop a", "unwinding stop a", "unwinding stop a", "unwinding restart a", "unwinding restart a", "=", "=", "-", "-", "-", "-", "serving none", "-", "-", "-", "-", "-"},
	"serving":                  {"serving stop i", "delayingRun stop d", "serving stop i", "serving restart i", "delayingRun restart d", "=", "=", "unwinding none u", "unwinding failure u", "-", "-", "-", "-", "-", "-", "-", "-"},
	"serving, drained":         {"serving stop i", "serving stop i", "serving stop i", "serving restart i", "serving restart i", "=", "=", "unwinding none u", "unwinding failure u", "-", "-", "-", "-", "-", "-", "-", "-"},
	"serving, pulling":         {"serving stop i", "serving stop i", "serving stop i", "-", "-", "=", "=", "unwinding none u", "unwinding failure u", "-", "-", "-", "-", "-", "-", "-", "-"},
	"delaying in Run":          {"=", "=", "=", "-", "-", "-", "-", "unwinding stop u", "unwinding failure u", "-", "-", "-", "-", "-", "-", "-", "-"},
	"delaying in Run, restart": {"=", "=", "=", "-", "-", "-", "-", "unwinding restart u", "unwinding failure u", "-", "-", "-", "-", "-", "-", "-", "-"},
	"delaying after Boot":      {"=", "=", "=", "-", "-", "-", "-", "-", "-", "-", "-", "= w", "-", "-", "-", "unwinding stop u", "-"},
	"unwinding":                {"=", "=", "=", "-", "-", "-", "-", "-", "-", "-", "-", "= w", "-", "-", "-", "-", "done stop"},
	"unwinding, failed":        {"=", "=", "=", "-", "-", "-", "-", "-", "-", "-", "-", "= w", "-", "-", "-", "-", "done failure"},
	"done":                     {"=", "=", "=", "-", "-", "-", "-", "-", "-", "-", "-", "= w", "-", "-", "-", "-", "-"},
	"done, failed":             {"=", "=", "=", "-", "-", "-", "-", "-", "-", "-", "-", "= w", "-", "-", "-", "-", "-"},
}

// cell renders what decide returned as the table writes it.
func cell(from stage, r reason, s stage, nr reason, act action, err error) string {
	if err != nil {
		return "-"
	}
	var acts string
	for _, a := range []struct {
		bit action
		c   string
	}{{actInterrupt, "i"}, {actDelay, "d"}, {actUnwindAsync, "a"}, {actUnwind, "u"}, {actWait, "w"}} {
		if act&a.bit != 0 {
			acts += a.c
		}
	}
	out := "="
	if s != from || nr != r {
		names := map[stage]string{created: "created", booting: "booting", booted: "booted", serving: "serving",
			delayingRun: "delayingRun", delayingBooted: "delayingBooted", unwinding: "unwinding", done: "done"}
		out = names[s] + " " + nr.String()
	}
	if acts != "" {
		out += " " + acts
	}
	return out
}

func TestTheDriverDecidesEveryRequestInEveryState(t *testing.T) {
	if len(driverTable) != len(driverStates) {
		t.Fatalf("the table has %d driver states, want all %d", len(driverTable), len(driverStates))
	}
	for _, st := range driverStates {
		row, ok := driverTable[st.name]
		if !ok || len(row) != len(driverRequests) {
			t.Fatalf("%s: %d cells, want one per request (%d)", st.name, len(row), len(driverRequests))
		}
		for i, rq := range driverRequests {
			c := conditionsOf(st.machine, rq.delay, rq.byRun, st.stage != created)
			s, r, act, err := decide(st.stage, st.reason, rq.req, c)
			if err != nil && !errors.Is(err, errRefused) {
				t.Errorf("%s, %s: error %v does not wrap errRefused", st.name, rq.name, err)
			}
			if got := cell(st.stage, st.reason, s, r, act, err); got != row[i] {
				t.Errorf("%s, %s: %q, want %q", st.name, rq.name, cell(st.stage, st.reason, s, r, act, err), row[i])
			}
			if err == nil {
				// Every move decide makes is one the tables declare.
				if s != st.stage && !slices.Contains(stageMoves[st.stage], s) {
					t.Errorf("%s, %s: moves %s -> %s, which stageMoves does not declare", st.name, rq.name, st.stage, s)
				}
				if r != st.reason && !slices.Contains(reasonMoves[st.reason], r) {
					t.Errorf("%s, %s: stop reason %s -> %s, which reasonMoves does not declare", st.name, rq.name, st.reason, r)
				}
			}
		}
	}
}

// Every declared move is one decide makes: the tables hold nothing dead.
func TestEveryDeclaredDriverMoveIsMadeBySomeRequest(t *testing.T) {
	made := map[string]bool{}
	for _, st := range driverStates {
		for _, rq := range driverRequests {
			s, r, _, err := decide(st.stage, st.reason, rq.req, conditionsOf(st.machine, rq.delay, rq.byRun, st.stage != created))
			if err == nil {
				made[st.stage.String()+">"+s.String()] = true
				made["reason "+st.reason.String()+">"+r.String()] = true
			}
		}
	}
	for from, tos := range stageMoves {
		for _, to := range tos {
			if !made[from.String()+">"+to.String()] {
				t.Errorf("stageMoves declares %s -> %s, which no request makes", from, to)
			}
		}
	}
	for from, tos := range reasonMoves {
		for _, to := range tos {
			if !made["reason "+from.String()+">"+to.String()] {
				t.Errorf("reasonMoves declares %s -> %s, which no request makes", from, to)
			}
		}
	}
}

// A move the tables do not declare is a bug of the driver: move panics
// rather than carry on in a state nobody designed.
func TestAnUndeclaredMovePanics(t *testing.T) {
	in := &Instance{stage: done, reason: stopAsked}
	defer func() {
		if v := recover(); v == nil || !strings.Contains(fmt.Sprint(v), "done to serving") {
			t.Fatalf("recover() = %v, want a panic naming the move", v)
		}
	}()
	in.move(serving, stopAsked)
}

// The context of Run ending is a stop: in every stage Run drives, it does
// what RequestStop does.
func TestCancellingRunsContextIsAStop(t *testing.T) {
	for _, tc := range []struct {
		name  string
		block phases.State // the boot phase Run is in when ctx ends; "" for Service.Run
	}{
		{"booting", phases.Configuring},
		{"serving", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			svc := newTestService()
			svc.blockIn = tc.block
			in, err := New(svc, f.options()...)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- in.Run(ctx) }()
			if tc.block != "" {
				<-svc.blocked
			} else {
				waitState(t, in, phases.Running)
			}
			cancel()
			if err := wait(t, done); err != nil {
				t.Fatalf("Run after its context ended = %v, want a clean stop", err)
			}
			if in.State() != phases.Stopped {
				t.Fatalf("state %s, want stopped", in.State())
			}
		})
	}
}
