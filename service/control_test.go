package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// testControlKey signs the ops of these tests; instances that receive them
// are given it with WithControlKeys.
var testControlKey = []byte("lifecycle-test-key-0123456789")

// sendAndWait sends op, signed with testControlKey, to instance i-1 of svc and
// returns its final result.
func sendAndWait(t *testing.T, f *fixture, op string, args any) controlops.Result {
	t.Helper()
	r, err := trySendAndWait(f, op, args)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// trySendAndWait sends op to i-1, signed with the test key, and waits up to
// 10 s for its final result; for goroutines, which must not call t.Fatal.
func trySendAndWait(f *fixture, op string, args any) (controlops.Result, error) {
	c := controlops.NewClient(f.client, testControlKey, controlops.WithClock(f.clock))
	sent, err := c.Send(context.Background(), "svc", op, "i-1", args)
	if err != nil {
		return controlops.Result{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	final, err := c.Wait(ctx, "svc", sent, nil, nil)
	if err != nil {
		return controlops.Result{}, fmt.Errorf("waiting for %s: %w", op, err)
	}
	return final["i-1"], nil
}

func TestPullOpGoesThroughPullingAndBackCallingTheHandler(t *testing.T) {
	f := newFixture(t)
	var got atomic.Value
	in, done := f.run(t, newTestService(), WithControlKeys(testControlKey), WithPullHandler(func(ctx context.Context, args json.RawMessage) error {
		got.Store(string(args))
		return nil
	}))

	r := sendAndWait(t, f, controlops.OpPull, map[string]string{"what": "settings"})
	if r.Status != controlops.StatusDone || r.State != string(phases.Running) {
		t.Fatalf("pull result %+v, want done in running", r)
	}
	if got.Load() != `{"what":"settings"}` {
		t.Fatalf("handler got args %v", got.Load())
	}
	path := f.rec.path()
	if !strings.Contains(statesString(path), "running pulling running") {
		t.Fatalf("path %v does not go running -> pulling -> running", path)
	}
	if err := in.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

func statesString(p []phases.State) string {
	s := make([]string, len(p))
	for i, x := range p {
		s[i] = string(x)
	}
	return strings.Join(s, " ")
}

func TestFailingPullHandlerReportsFailedAndReturnsToRunning(t *testing.T) {
	f := newFixture(t)
	in, done := f.run(t, newTestService(), WithControlKeys(testControlKey), WithPullHandler(func(context.Context, json.RawMessage) error {
		return errors.New("settings file unreadable")
	}))
	r := sendAndWait(t, f, controlops.OpPull, nil)
	if r.Status != controlops.StatusFailed || !strings.Contains(r.Reason, "settings file unreadable") || r.State != string(phases.Running) {
		t.Fatalf("result %+v, want failed naming the handler's error, back in running", r)
	}
	if in.State() != phases.Running {
		t.Fatalf("state %q after a failing pull", in.State())
	}
	_ = in.Shutdown(context.Background())
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestOpsWithoutHandlerOrUnknownAreRejectedAndOwnOpsRun(t *testing.T) {
	f := newFixture(t)
	var ran atomic.Bool
	in, done := f.run(t, newTestService(), WithControlKeys(testControlKey), WithOperation("flush-cache", func(context.Context, json.RawMessage) error {
		ran.Store(true)
		return nil
	}))
	if r := sendAndWait(t, f, controlops.OpPull, nil); r.Status != controlops.StatusRejected || !strings.Contains(r.Reason, "no pull handler") {
		t.Errorf("pull without handler: %+v", r)
	}
	if r := sendAndWait(t, f, "nosuch", nil); r.Status != controlops.StatusRejected {
		t.Errorf("unknown op: %+v", r)
	}
	if r := sendAndWait(t, f, "flush-cache", nil); r.Status != controlops.StatusDone || !ran.Load() {
		t.Errorf("own op: %+v ran=%v", r, ran.Load())
	}
	_ = in.Shutdown(context.Background())
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestOperationNamedRestartIsAConfigError(t *testing.T) {
	f := newFixture(t)
	_, err := New(newTestService(), f.options(WithOperation("restart", func(context.Context, json.RawMessage) error { return nil }))...)
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("New = %v, want a config error naming restart", err)
	}
}

func TestRestartHandedOverCompletesWhenTheNewProcessRuns(t *testing.T) {
	f := newFixture(t)
	// What the old process left: the hand-over and its slot.
	f.mr.HSet(controlops.PendingKey("svc", "i-1"), "op_id", "op-1", "entry", "1-1", "traceparent", "", "slot", "true")
	if _, err := f.mr.ZAdd(controlops.SlotsKey("svc"), 1e15, "i-1"); err != nil {
		t.Fatal(err)
	}
	in, done := f.run(t, newTestService())
	c := controlops.NewClient(f.client, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	final, err := c.Wait(ctx, "svc", controlops.Op{ID: "op-1", Target: "i-1"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := final["i-1"]; r.Status != controlops.StatusDone || r.State != string(phases.Running) {
		t.Fatalf("restart result %+v, want done in running", r)
	}
	if f.mr.Exists(controlops.PendingKey("svc", "i-1")) {
		t.Error("hand-over not deleted")
	}
	if m, _ := f.mr.ZMembers(controlops.SlotsKey("svc")); len(m) != 0 {
		t.Errorf("slot not released: %v", m)
	}
	_ = in.Shutdown(context.Background())
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

func TestInsecureControlHealthzWarnsUnsignedOpsAccepted(t *testing.T) {
	f := newFixture(t)
	in, done := f.run(t, newTestService(), WithControlInsecure(true))
	in.health.Refresh(context.Background())
	rec := httpGet(t, in, "/healthz")
	if !strings.Contains(rec, "unsigned control ops accepted") || !strings.Contains(rec, `"warn"`) {
		t.Errorf("/healthz does not warn:\n%s", rec)
	}
	_ = in.Shutdown(context.Background())
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

func httpGet(t *testing.T, in *Instance, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + in.HealthAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// healthzCheck returns the status and output of one check of /healthz.
func healthzCheck(t *testing.T, in *Instance, name string) (string, string) {
	t.Helper()
	in.health.Refresh(context.Background())
	var body struct {
		Checks map[string][]struct{ Status, Output string } `json:"checks"`
	}
	raw := httpGet(t, in, "/healthz")
	if err := json.Unmarshal([]byte(raw), &body); err != nil {
		t.Fatalf("/healthz: %v\n%s", err, raw)
	}
	c := body.Checks[name]
	if len(c) != 1 {
		t.Fatalf("/healthz has no %s check:\n%s", name, raw)
	}
	return c[0].Status, c[0].Output
}

// runningEntry polls the registry until i-1 of svc is registered as running.
func runningEntry(t *testing.T, f *fixture) registry.Entry {
	t.Helper()
	reg := registry.New(f.client)
	deadline := time.Now().Add(10 * time.Second)
	for {
		e, err := reg.Entry(context.Background(), "svc", "i-1")
		if err == nil && e.Status == string(phases.Running) {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("i-1 never registered as running: %+v %v", e, err)
		}
		time.Sleep(time.Millisecond) // polling interval
	}
}

func TestRegistryAndHealthzSayWhichControlOpsAnInstanceAccepts(t *testing.T) {
	for _, tc := range []struct {
		name         string
		opts         []Option
		mode         string
		status, note string
	}{
		{"no key", nil, "disabled", "pass", "control ops disabled"},
		{"insecure", []Option{WithControlInsecure(true)}, "insecure", "warn", "unsigned control ops accepted"},
		{"key", []Option{WithControlKeys(testControlKey)}, "signed", "pass", "signed control ops only (key ids " + controlops.KeyID(testControlKey) + ")"},
		{"key and insecure", []Option{WithControlKeys(testControlKey), WithControlInsecure(true)}, "signed", "pass", "signed control ops only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			in, err := New(newTestService(), f.options(tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			done := startRun(t, in)
			waitState(t, in, phases.Running)
			if e := runningEntry(t, f); e.Control != tc.mode {
				t.Errorf("registry entry control %q, want %q", e.Control, tc.mode)
			}
			status, out := healthzCheck(t, in, ControlCheck)
			if status != tc.status || !strings.Contains(out, tc.note) {
				t.Errorf("%s: %s %q, want %s containing %q", ControlCheck, status, out, tc.status, tc.note)
			}
			_ = in.Shutdown(context.Background())
			if err := wait(t, done); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestWithoutControlKeyUnsignedRestartAndPullAreRejectedSayingHowToEnableThem(t *testing.T) {
	f := newFixture(t)
	var pulled atomic.Bool
	in, done := f.run(t, newTestService(), WithPullHandler(func(context.Context, json.RawMessage) error {
		pulled.Store(true)
		return nil
	}))
	c := controlops.NewClient(f.client, nil, controlops.WithClock(f.clock))
	for _, op := range []string{controlops.OpRestart, controlops.OpPull} {
		sent, err := c.Send(context.Background(), "svc", op, "i-1", nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		final, err := c.Wait(ctx, "svc", sent, nil, nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if r := final["i-1"]; r.Status != controlops.StatusRejected || !strings.Contains(r.Reason, fleetenv.ControlKey) || !strings.Contains(r.Reason, fleetenv.ControlInsecure+"=true") {
			t.Errorf("unsigned %s: %s %q, want rejected naming %s and %s", op, r.Status, r.Reason, fleetenv.ControlKey, fleetenv.ControlInsecure)
		}
	}
	if in.State() != phases.Running || in.Restarting() || pulled.Load() {
		t.Fatalf("state %s, restarting %v, pulled %v: an op ran", in.State(), in.Restarting(), pulled.Load())
	}
	_ = in.Shutdown(context.Background())
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
}

// A restart asked while a pull runs is refused: the table has no restart
// edge from pulling, so the instance would have no way into the shutdown
// steps. The pull ends and the instance runs on.
func TestARestartDuringAPullIsRefusedAndThePullEndsInRunning(t *testing.T) {
	f := newFixture(t)
	inPull, release := make(chan struct{}), make(chan struct{})
	in, done := f.run(t, newTestService(), WithControlKeys(testControlKey), WithPullHandler(func(context.Context, json.RawMessage) error {
		close(inPull)
		<-release
		return nil
	}))
	pulled := make(chan controlops.Result, 1)
	failed := make(chan error, 1)
	go func() {
		r, err := trySendAndWait(f, controlops.OpPull, nil)
		if err != nil {
			failed <- err
			return
		}
		pulled <- r
	}()
	select {
	case <-inPull:
	case err := <-failed:
		t.Fatal(err)
	}
	if err := in.RequestRestart(); !errors.Is(err, lifecycle.ErrInvalidEvent) {
		t.Errorf("RequestRestart while pulling = %v, want an invalid event", err)
	}
	if (controlTarget{in}).Restartable() {
		t.Error("the control target says a restart may begin while pulling")
	}
	close(release)
	select {
	case r := <-pulled:
		if r.Status != controlops.StatusDone {
			t.Fatalf("pull: %s %q", r.Status, r.Reason)
		}
	case err := <-failed:
		t.Fatal(err)
	}
	waitState(t, in, phases.Running)
	in.RequestStop()
	if err := wait(t, done); err != nil {
		t.Fatalf("Run = %v, want a clean stop", err)
	}
}
