package lifecycle

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/phases"
)

// sendAndWait sends op to instance i-1 of svc and returns its final result.
func sendAndWait(t *testing.T, f *fixture, op string, args any) controlops.Result {
	t.Helper()
	c := controlops.NewClient(f.client, nil, controlops.WithClock(f.clock))
	sent, err := c.Send(context.Background(), "svc", op, "i-1", args)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	final, err := c.Wait(ctx, "svc", sent, nil, nil)
	if err != nil {
		t.Fatalf("waiting for %s: %v", op, err)
	}
	return final["i-1"]
}

func TestPullOpGoesThroughPullingAndBackCallingTheHandler(t *testing.T) {
	f := newFixture(t)
	var got atomic.Value
	in, err := New(newTestService(), f.options(WithPullHandler(func(ctx context.Context, args json.RawMessage) error {
		got.Store(string(args))
		return nil
	}))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	waitState(t, in, phases.Running)

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
	in, err := New(newTestService(), f.options(WithPullHandler(func(context.Context, json.RawMessage) error {
		return errors.New("settings file unreadable")
	}))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	waitState(t, in, phases.Running)
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
	in, err := New(newTestService(), f.options(WithOperation("flush-cache", func(context.Context, json.RawMessage) error {
		ran.Store(true)
		return nil
	}))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	waitState(t, in, phases.Running)
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

func TestRestartOpWithExitCodeGoesThroughShutdownAndReturnsTheCode(t *testing.T) {
	f := newFixture(t)
	codeCh := make(chan int, 1)
	go func() {
		codeCh <- MainContext(context.Background(), newTestService(),
			f.options(WithEnv(envOf(nil)), WithRestartExit(ExitRestart), WithStderr(syncWriter(f.logs)))...)
	}()
	// The instance is not reachable from here: wait for its registry status.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(statesString(f.rec.path()), "running") {
		if time.Now().After(deadline) {
			t.Fatalf("never reached running: %v", f.rec.path())
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	c := controlops.NewClient(f.client, nil, controlops.WithClock(f.clock))
	sent, err := c.Send(context.Background(), "svc", controlops.OpRestart, "*", nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-codeCh:
		if code != ExitRestart {
			t.Fatalf("MainContext = %d, want %d (ExitRestart)", code, ExitRestart)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("MainContext did not return after the restart op")
	}
	want := []phases.State{phases.Running, phases.StoppingDaemons, phases.StoppingHealth, phases.Deregistering, phases.CleaningUp, phases.Stopped}
	if got := statesString(f.rec.path()); !strings.HasSuffix(got, statesString(want)) {
		t.Fatalf("path %s, want it to end %s", got, statesString(want))
	}
	trs := f.rec.transitions()
	for _, tr := range trs {
		if tr.From == phases.Running && tr.To == phases.StoppingDaemons && tr.Event != phases.Restart {
			t.Fatalf("left running by %q, want restart", tr.Event)
		}
	}
	rs, err := c.Results(context.Background(), "svc", "0", 10, 0)
	if err != nil || len(rs) != 1 || rs[0].Status != controlops.StatusAccepted || rs[0].OpID != sent.ID {
		t.Fatalf("results %+v (%v), want one accepted for %s", rs, err, sent.ID)
	}
	if !f.mr.Exists(controlops.PendingKey("svc", "i-1")) {
		t.Fatal("no restart hand-over for the next process")
	}
}

func TestRestartHandedOverCompletesWhenTheNewProcessRuns(t *testing.T) {
	f := newFixture(t)
	// What the old process left: the hand-over and its slot.
	f.mr.HSet(controlops.PendingKey("svc", "i-1"), "op_id", "op-1", "entry", "1-1", "traceparent", "", "slot", "true")
	if _, err := f.mr.ZAdd(controlops.SlotsKey("svc"), 1e15, "i-1"); err != nil {
		t.Fatal(err)
	}
	in, err := New(newTestService(), f.options()...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	waitState(t, in, phases.Running)
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

func TestWithoutControlKeyHealthzWarnsUnsignedOpsAccepted(t *testing.T) {
	f := newFixture(t)
	in, err := New(newTestService(), f.options()...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	waitState(t, in, phases.Running)
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
