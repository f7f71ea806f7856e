package lifecycle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/controlops"
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
	c := controlops.NewClient(f.client, testControlKey, controlops.WithClock(f.clock))
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
	in, err := New(newTestService(), f.options(WithControlKeys(testControlKey), WithPullHandler(func(ctx context.Context, args json.RawMessage) error {
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
	in, err := New(newTestService(), f.options(WithControlKeys(testControlKey), WithPullHandler(func(context.Context, json.RawMessage) error {
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
	in, err := New(newTestService(), f.options(WithControlKeys(testControlKey), WithOperation("flush-cache", func(context.Context, json.RawMessage) error {
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
			f.options(WithEnv(envOf(nil)), WithControlKeys(testControlKey), WithRestartExit(ExitRestart), WithStderr(syncWriter(f.logs)))...)
	}()
	// The instance is not reachable from here: wait for its registry status.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(statesString(f.rec.path()), "running") {
		if time.Now().After(deadline) {
			t.Fatalf("never reached running: %v", f.rec.path())
		}
		time.Sleep(time.Millisecond) // polling interval
	}
	c := controlops.NewClient(f.client, testControlKey, controlops.WithClock(f.clock))
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

func TestInsecureControlHealthzWarnsUnsignedOpsAccepted(t *testing.T) {
	f := newFixture(t)
	in, err := New(newTestService(), f.options(WithControlInsecure(true))...)
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
	in, err := New(newTestService(), f.options(WithPullHandler(func(context.Context, json.RawMessage) error {
		pulled.Store(true)
		return nil
	}))...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	waitState(t, in, phases.Running)
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
		if r := final["i-1"]; r.Status != controlops.StatusRejected || !strings.Contains(r.Reason, EnvControlKey) || !strings.Contains(r.Reason, EnvControlInsecure+"=true") {
			t.Errorf("unsigned %s: %s %q, want rejected naming %s and %s", op, r.Status, r.Reason, EnvControlKey, EnvControlInsecure)
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

func TestRestartHandOverThroughTheEnvironmentKeepsOpsSentMeanwhileAndRefusesReplays(t *testing.T) {
	f := newFixture(t)
	pulls := make(chan string, 4)
	pull := WithPullHandler(func(_ context.Context, args json.RawMessage) error {
		pulls <- string(args)
		return nil
	})
	old, err := New(newTestService(), f.options(WithControlKeys(testControlKey), pull)...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, old)
	waitState(t, old, phases.Running)
	c := controlops.NewClient(f.client, testControlKey, controlops.WithClock(f.clock), controlops.WithTTL(controlops.MaxTTL))
	f.clock.Advance(time.Minute) // the op comes a while after the process started
	restart, err := c.Send(context.Background(), "svc", controlops.OpRestart, "i-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	plan := old.restartPlan(nil)
	if plan == nil {
		t.Fatal("no restart plan after a restart op")
	}
	if want := strconv.FormatInt(restart.IssuedAt.UnixMilli(), 10); plan.notBefore != want {
		t.Errorf("%s=%s, want the restart's issued_at %s", EnvRestartNotBefore, plan.notBefore, want)
	}
	if !strings.HasPrefix(plan.nonces, restart.Nonce+":") {
		t.Errorf("%s=%q does not hand over the restart's nonce %s", EnvRestartNonces, plan.nonces, restart.Nonce)
	}

	// A pull sent while the instance restarts; the next process comes up 20s
	// later.
	f.clock.Advance(time.Second)
	meanwhile, err := c.Send(context.Background(), "svc", controlops.OpPull, "i-1", json.RawMessage(`"meanwhile"`))
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(19 * time.Second)
	next := *f
	next.rec = &recorder{}
	env := map[string]string{EnvRestartNotBefore: plan.notBefore, EnvRestartNonces: plan.nonces}
	ctx, cancel := context.WithCancel(context.Background())
	codeCh := make(chan int, 1)
	go func() {
		codeCh <- MainContext(ctx, newTestService(), next.options(WithEnv(envOf(env)), WithControlKeys(testControlKey), pull, WithStderr(syncWriter(f.logs)))...)
	}()
	defer func() {
		cancel()
		if code := <-codeCh; code != ExitOK {
			t.Errorf("MainContext = %d", code)
		}
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	for _, op := range []controlops.Op{restart, meanwhile} {
		final, err := c.Wait(wctx, "svc", op, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", op.Name, err)
		}
		if r := final["i-1"]; r.Status != controlops.StatusDone {
			t.Errorf("%s: %s %q, want done by the next process", op.Name, r.Status, r.Reason)
		}
	}
	select {
	case got := <-pulls:
		if got != `"meanwhile"` {
			t.Errorf("pull handler got %s", got)
		}
	default:
		t.Error("the pull sent during the restart never reached the handler")
	}

	// Redis wiped, the restart replayed: the next process knows its nonce from
	// the environment alone.
	f.mr.FlushAll()
	for _, op := range []controlops.Op{restart, meanwhile} {
		id, err := f.client.XAdd(context.Background(), &redis.XAddArgs{Stream: controlops.StreamKey("svc"), Values: op.Values()}).Result()
		if err != nil {
			t.Fatal(err)
		}
		op.StreamID = id
		final, err := c.Wait(wctx, "svc", op, nil, nil)
		if err != nil {
			t.Fatalf("replayed %s: %v", op.Name, err)
		}
		if r := final["i-1"]; r.Status != controlops.StatusRejected || !strings.Contains(r.Reason, "replay") {
			t.Errorf("replayed %s: %s %q, want rejected as a replay", op.Name, r.Status, r.Reason)
		}
	}
	select {
	case got := <-pulls:
		t.Errorf("the replayed pull ran (%s)", got)
	default:
	}
}

func TestBadRestartHandOverExitsTwo(t *testing.T) {
	for _, tc := range []struct{ env map[string]string }{
		{map[string]string{EnvRestartNotBefore: "yesterday"}},
		{map[string]string{EnvRestartNotBefore: "1700000000000", EnvRestartNonces: "nonce 1:2:3"}},
		{map[string]string{EnvRestartNonces: "nonce-0001:1:2"}},
	} {
		var stderr bytes.Buffer
		if code := MainContext(context.Background(), newTestService(), WithEnv(envOf(tc.env)), WithStderr(&stderr)); code != ExitConfig {
			t.Errorf("%v: exit code %d, want %d", tc.env, code, ExitConfig)
		}
		for name := range tc.env {
			if !strings.Contains(stderr.String(), "SG_RESTART_") {
				t.Errorf("%v: message does not name %s:\n%s", tc.env, name, stderr.String())
			}
		}
	}
}

func TestControlKeyListAndInsecureOptInAreReadFromTheEnvironment(t *testing.T) {
	env, err := ParseEnv(envOf(map[string]string{
		EnvControlKey:      "new-key-0123456789abcdef,old-key-0123456789abcdef",
		EnvControlInsecure: "true",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(env.ControlKeys) != 2 || string(env.ControlKeys[0]) != "new-key-0123456789abcdef" || string(env.ControlKeys[1]) != "old-key-0123456789abcdef" {
		t.Errorf("keys %q, want new then old", env.ControlKeys)
	}
	if !env.ControlInsecure || !env.ControlInsecureSet {
		t.Errorf("%s=true not read", EnvControlInsecure)
	}
	var cfg config
	env.applyTo(&cfg)
	if len(cfg.controlKeys) != 2 || !cfg.controlInsecure {
		t.Errorf("not applied: %d keys, insecure %v", len(cfg.controlKeys), cfg.controlInsecure)
	}
	if _, err := New(newTestService(), WithControlKeys([]byte("short")), WithoutHealthServer()); !errors.Is(err, ErrConfig) || strings.Contains(err.Error(), "short") {
		t.Errorf("WithControlKeys with a 5-byte key: %v, want a config error that does not show it", err)
	}
}
