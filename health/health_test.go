package health

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/internal/tabletest"
	"github.com/stargazer/lifecycle/phases"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeSource is a StateSource the test drives.
type fakeSource struct {
	mu   sync.Mutex
	snap Snapshot
}

func (f *fakeSource) Snapshot() Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.snap
}

func (f *fakeSource) set(fn func(*Snapshot)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.snap)
}

// lifecycleTable is the table the tests' sources read a state's role and doc
// from, as the root package's source does.
var lifecycleTable = phases.Lifecycle()

// inState puts sn in state, with the role and the doc tbl gives it.
func inState(sn *Snapshot, tbl *phases.Table, state string) {
	info, _ := tbl.State(phases.State(state))
	sn.State, sn.Role, sn.Doc = state, info.Role, info.Doc
}

// setState moves the source to a lifecycle state.
func (f *fakeSource) setState(state string) {
	f.set(func(sn *Snapshot) { inState(sn, lifecycleTable, state) })
}

func newSource(state string, since time.Time) *fakeSource {
	f := &fakeSource{snap: Snapshot{Service: "billing", Instance: "billing-1", Version: "1.4.2", Since: since}}
	inState(&f.snap, lifecycleTable, state)
	return f
}

func newServer(t *testing.T, src StateSource, opts ...Option) *Server {
	t.Helper()
	s, err := New(src, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return s
}

// probe sends GET path to h and decodes the body.
func probe(t *testing.T, h http.Handler, path string) (int, Response) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if ct := rec.Header().Get("Content-Type"); ct != ContentType {
		t.Fatalf("GET %s: Content-Type %q, want %q", path, ct, ContentType)
	}
	var r Response
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatalf("GET %s: body %q does not decode: %v", path, rec.Body.String(), err)
	}
	return rec.Code, r
}

// Every state of the lifecycle, probed as it begins and an hour later: what
// each probe answers follows from the state's role alone.
func TestProbesInEveryLifecycleStateFollowItsRole(t *testing.T) {
	const ok, no = http.StatusOK, http.StatusServiceUnavailable
	type want struct {
		livez, readyz, healthz int
		status                 string // of /healthz
		livezLater             int    // /livez an hour later, past StuckAfter
	}
	byRole := map[phases.Role]want{
		phases.RoleWorking:  {ok, no, ok, StatusWarn, no}, // wedged when it lasts
		phases.RoleServing:  {ok, ok, ok, StatusPass, ok},
		phases.RoleDraining: {ok, no, ok, StatusWarn, ok},
		phases.RoleStopped:  {ok, no, ok, StatusWarn, ok},
		phases.RoleFailed:   {no, no, no, StatusFail, no},
	}
	seen := map[phases.Role]bool{}
	for _, si := range phases.Lifecycle().AllStates() {
		w, known := byRole[si.Role]
		if !known {
			t.Errorf("state %q has role %q, which this test has no row for", si.Name, si.Role)
			continue
		}
		seen[si.Role] = true
		t.Run(string(si.Name), func(t *testing.T) {
			clock := clockwork.NewFakeClock()
			src := newSource(string(si.Name), clock.Now())
			s := newServer(t, src, WithClock(clock), WithStuckAfter(time.Minute),
				WithCheck("db:ping", func(context.Context) error { return nil }, Required()))
			s.Refresh(context.Background())
			for _, p := range []struct {
				path string
				want int
			}{{PathLive, w.livez}, {PathReady, w.readyz}, {PathHealth, w.healthz}} {
				code, body := probe(t, s.Handler(), p.path)
				if code != p.want {
					t.Errorf("GET %s in %q (role %s) = %d (%q), want %d", p.path, si.Name, si.Role, code, body.Output, p.want)
				}
				if body.State != string(si.Name) {
					t.Errorf("GET %s: state %q, want %q", p.path, body.State, si.Name)
				}
			}
			_, body := probe(t, s.Handler(), PathHealth)
			if body.Status != w.status {
				t.Errorf("healthz status in %q (role %s) = %q, want %q", si.Name, si.Role, body.Status, w.status)
			}
			if si.Role == phases.RoleDraining && (!strings.Contains(body.Output, string(si.Name)) || !strings.Contains(body.Output, si.Doc)) {
				t.Errorf("healthz output in %q = %q, want the state and its doc %q", si.Name, body.Output, si.Doc)
			}

			clock.Advance(time.Hour)
			code, body := probe(t, s.Handler(), PathLive)
			if code != w.livezLater {
				t.Errorf("livez an hour into %q (role %s) = %d (%q), want %d", si.Name, si.Role, code, body.Output, w.livezLater)
			}
			if alive := s.Alive() == nil; alive != (w.livezLater == ok) {
				t.Errorf("Alive() an hour into %q = %v, want it to agree with livez %d", si.Name, s.Alive(), w.livezLater)
			}
			if si.Role == phases.RoleWorking && !strings.Contains(body.Output, "wedged") {
				t.Errorf("livez output an hour into %q = %q, want it to say wedged", si.Name, body.Output)
			}
		})
	}
	for role := range byRole {
		if !seen[role] {
			t.Errorf("no state of phases.Lifecycle has role %q: its row is not exercised", role)
		}
	}
}

// A control state added to a copy of the lifecycle table by the recipe of
// docs/architecture.md (pausing) takes its group's role, and health reads
// it right with no edit of its own: not ready, alive, never wedged.
func TestANewControlStateIsNotReadyAliveAndNeverWedged(t *testing.T) {
	pausing := tabletest.Pausing
	tbl := tabletest.Grown()
	info, _ := tbl.State(pausing)
	doc := info.Doc

	clock := clockwork.NewFakeClock()
	src := newSource("running", clock.Now())
	s := newServer(t, src, WithClock(clock), WithStuckAfter(time.Minute))
	src.set(func(sn *Snapshot) { inState(sn, tbl, string(pausing)) })
	if code, body := probe(t, s.Handler(), PathReady); code != http.StatusServiceUnavailable {
		t.Errorf("readyz in pausing = %d (%q), want 503", code, body.Output)
	}
	code, body := probe(t, s.Handler(), PathHealth)
	if code != http.StatusOK || body.Status != StatusWarn || !strings.Contains(body.Output, `"pausing"`) || !strings.Contains(body.Output, doc) {
		t.Errorf("healthz in pausing = %d %q (%q), want 200 warn naming the state and its doc", code, body.Status, body.Output)
	}
	clock.Advance(24 * time.Hour)
	if code, body := probe(t, s.Handler(), PathLive); code != http.StatusOK {
		t.Errorf("livez a day into pausing = %d (%q), want 200: never wedged", code, body.Output)
	}
	if err := s.Alive(); err != nil {
		t.Errorf("Alive() a day into pausing = %v, want nil", err)
	}
}

// A source that gives no role (one written before roles) is read as in a
// working state: not ready, and wedged when it lasts.
func TestASnapshotWithoutARoleIsAWorkingState(t *testing.T) {
	clock := clockwork.NewFakeClock()
	src := &fakeSource{snap: Snapshot{State: "running", Since: clock.Now()}}
	s := newServer(t, src, WithClock(clock), WithStuckAfter(time.Minute))
	if code, _ := probe(t, s.Handler(), PathReady); code != http.StatusServiceUnavailable {
		t.Errorf("readyz without a role = %d, want 503", code)
	}
	if code, _ := probe(t, s.Handler(), PathLive); code != http.StatusOK {
		t.Errorf("livez without a role = %d, want 200", code)
	}
	clock.Advance(time.Hour)
	if code, body := probe(t, s.Handler(), PathLive); code != http.StatusServiceUnavailable || !strings.Contains(body.Output, "wedged") {
		t.Errorf("livez an hour later without a role = %d (%q), want 503 wedged", code, body.Output)
	}
}

func TestReadinessIs503FromFirstShutdownStateOn(t *testing.T) {
	clock := clockwork.NewFakeClock()
	states := append(append([]phases.State{}, phases.Lifecycle().StatesIn(phases.GroupShutdown)...), phases.Stopped, phases.Failed)
	if states[0] != "stopping_daemons" {
		t.Fatalf("first shutdown state is %q, the contract says stopping_daemons", states[0])
	}
	src := newSource("running", clock.Now())
	s := newServer(t, src, WithClock(clock))
	if code, body := probe(t, s.Handler(), "/readyz"); code != http.StatusOK {
		t.Fatalf("readyz in running = %d (%q), want 200", code, body.Output)
	}
	for _, st := range states {
		src.setState(string(st))
		if code, _ := probe(t, s.Handler(), "/readyz"); code != http.StatusServiceUnavailable {
			t.Errorf("readyz in %q = %d, want 503", st, code)
		}
	}
}

func TestReadinessIs503WhenShuttingDownWhileStillRunning(t *testing.T) {
	src := newSource("running", time.Now())
	s := newServer(t, src)
	src.set(func(sn *Snapshot) { sn.ShuttingDown = true })
	code, body := probe(t, s.Handler(), "/readyz")
	if code != http.StatusServiceUnavailable || body.Status != StatusFail {
		t.Fatalf("readyz while shutting down = %d %q, want 503 fail", code, body.Status)
	}
	if !strings.Contains(body.Output, "shutting down") {
		t.Errorf("output %q does not say why", body.Output)
	}
	if code, _ := probe(t, s.Handler(), "/livez"); code != http.StatusOK {
		t.Errorf("livez while shutting down = %d, want 200: shutting down is not dead", code)
	}
}

// redisDown returns a client whose server has gone away.
func redisDown(t *testing.T) *redis.Client {
	t.Helper()
	mr := miniredis.RunT(t)
	// One dial attempt: go-redis otherwise retries a refused dial 5 times, 100ms apart.
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialerRetries: 1, DialerRetryTimeout: time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("ping before closing miniredis: %v", err)
	}
	mr.Close()
	return rdb
}

func TestRequiredRedisDownFailsReadinessAndHealth(t *testing.T) {
	s := newServer(t, newSource("running", time.Now()), WithRedis(redisDown(t), true))
	s.Refresh(context.Background())

	if code, body := probe(t, s.Handler(), "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body.Output, RedisCheck) {
		t.Errorf("readyz = %d (%q), want 503 naming %s", code, body.Output, RedisCheck)
	}
	code, body := probe(t, s.Handler(), "/healthz")
	if code != http.StatusServiceUnavailable || body.Status != StatusFail {
		t.Errorf("healthz = %d %q, want 503 fail", code, body.Status)
	}
	if got := body.Checks[RedisCheck]; len(got) != 1 || got[0].Status != StatusFail || got[0].Output == "" {
		t.Errorf("checks[%s] = %+v, want one failing result with output", RedisCheck, got)
	}
	if code, _ := probe(t, s.Handler(), "/livez"); code != http.StatusOK {
		t.Errorf("livez = %d, want 200: Redis being down is no reason to restart", code)
	}
}

func TestOptionalRedisDownKeepsReadyAndWarns(t *testing.T) {
	s := newServer(t, newSource("running", time.Now()), WithRedis(redisDown(t), false))
	s.Refresh(context.Background())

	if code, body := probe(t, s.Handler(), "/readyz"); code != http.StatusOK || body.Status != StatusWarn {
		t.Errorf("readyz = %d %q, want 200 warn", code, body.Status)
	}
	code, body := probe(t, s.Handler(), "/healthz")
	if code != http.StatusOK || body.Status != StatusWarn {
		t.Errorf("healthz = %d %q, want 200 warn", code, body.Status)
	}
	if got := body.Checks[RedisCheck]; len(got) != 1 || got[0].Status != StatusWarn {
		t.Errorf("checks[%s] = %+v, want warn", RedisCheck, got)
	}
}

func TestSnapshotRedisRequiredMakesRedisCheckRequired(t *testing.T) {
	src := newSource("running", time.Now())
	src.set(func(sn *Snapshot) { sn.RedisRequired = true })
	s := newServer(t, src, WithRedis(redisDown(t), false))
	s.Refresh(context.Background())
	if code, _ := probe(t, s.Handler(), "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("readyz = %d, want 503", code)
	}
}

func TestRedisUpIsReadyAndPasses(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	s := newServer(t, newSource("running", time.Now()), WithRedis(rdb, true))
	s.Refresh(context.Background())
	if code, body := probe(t, s.Handler(), "/readyz"); code != http.StatusOK || body.Status != StatusPass {
		t.Errorf("readyz = %d %q (%q), want 200 pass", code, body.Status, body.Output)
	}
}

func TestRequiredCheckThatHasNotRunKeepsReadinessAt503(t *testing.T) {
	s := newServer(t, newSource("running", time.Now()), WithCheck("db:ping", func(context.Context) error { return nil }, Required()))
	code, body := probe(t, s.Handler(), "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body.Output, "not run yet") {
		t.Errorf("readyz before any check round = %d (%q), want 503 saying it has not run", code, body.Output)
	}
	s.Refresh(context.Background())
	if code, _ := probe(t, s.Handler(), "/readyz"); code != http.StatusOK {
		t.Errorf("readyz after a passing round = %d, want 200", code)
	}
}

func TestDegradedInstanceIsReadyButWarns(t *testing.T) {
	src := newSource("running", time.Now())
	src.set(func(sn *Snapshot) { sn.Degraded = true })
	s := newServer(t, src)
	code, body := probe(t, s.Handler(), "/healthz")
	if code != http.StatusOK || body.Status != StatusWarn || !strings.Contains(body.Output, "degraded") {
		t.Errorf("healthz = %d %q (%q), want 200 warn saying degraded", code, body.Status, body.Output)
	}
}

func TestProbeAnswersFromCacheWhileCheckBlocks(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	slow := func(ctx context.Context) error {
		once.Do(func() { close(entered) })
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s := newServer(t, newSource("running", time.Now()), WithCheck("slow:ping", slow), WithCheckTimeout(time.Hour))

	refreshed := make(chan struct{})
	go func() { defer close(refreshed); s.Refresh(context.Background()) }()
	<-entered // the check is now blocked inside Refresh

	answered := make(chan int, 1)
	go func() {
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		answered <- rec.Code
	}()
	select {
	case code := <-answered:
		if code != http.StatusOK {
			t.Errorf("healthz while the check blocks = %d, want 200 (warn, not checked yet)", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("healthz did not answer while a check was blocked: probes wait on checks")
	}
	close(release)
	<-refreshed
	if _, body := probe(t, s.Handler(), "/healthz"); body.Checks["slow:ping"][0].Status != StatusPass {
		t.Errorf("after release, slow:ping = %+v, want pass", body.Checks["slow:ping"])
	}
}

func TestCheckIgnoringItsContextIsRecordedAsTimedOutAndNotRestarted(t *testing.T) {
	var calls atomic.Int32
	release := make(chan struct{})
	stuck := func(context.Context) error { calls.Add(1); <-release; return nil }
	s := newServer(t, newSource("running", time.Now()), WithCheck("stuck:ping", stuck, Required()), WithCheckTimeout(10*time.Millisecond))

	s.Refresh(context.Background()) // returns once the timeout fires
	code, body := probe(t, s.Handler(), "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body.Output, "did not return within") {
		t.Errorf("readyz = %d (%q), want 503 naming the timeout", code, body.Output)
	}
	s.Refresh(context.Background()) // the first run is still in flight
	if n := calls.Load(); n != 1 {
		t.Errorf("check started %d times while a run was in flight, want 1", n)
	}
	close(release) // Shutdown (cleanup) awaits the run
}

func TestBodyIsHealthJSONWithContractFields(t *testing.T) {
	clock := clockwork.NewFakeClock()
	src := newSource("starting", clock.Now())
	src.set(func(sn *Snapshot) { sn.Phase = "7" })
	s := newServer(t, src, WithClock(clock), WithCheck("db:ping", func(context.Context) error { return errors.New("dial tcp 10.0.0.1:5432: refused") }, ComponentType("datastore")))
	s.Refresh(context.Background())

	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if ct := rec.Header().Get("Content-Type"); ct != "application/health+json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var raw map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"status": "warn", "state": "starting", "phase": "7", "serviceId": "billing-1", "description": "billing", "version": "1.4.2"}
	for k, v := range want {
		if raw[k] != v {
			t.Errorf("body[%q] = %v, want %v (body %s)", k, raw[k], v, rec.Body)
		}
	}
	checks, _ := raw["checks"].(map[string]any)
	for _, name := range []string{"db:ping", LifecycleCheck} {
		list, _ := checks[name].([]any)
		if len(list) != 1 {
			t.Fatalf("checks[%q] = %v, want one result", name, checks[name])
		}
		res := list[0].(map[string]any)
		for _, k := range []string{"status", "componentType", "observedValue", "time"} {
			if _, ok := res[k]; !ok {
				t.Errorf("checks[%q] lacks %q: %v", name, k, res)
			}
		}
	}
	db := checks["db:ping"].([]any)[0].(map[string]any)
	if db["componentType"] != "datastore" || db["output"] != "dial tcp "+AddrHidden+": refused" {
		t.Errorf("checks[db:ping] = %v, want componentType datastore and the error as output, its address hidden", db)
	}
}

func TestLivenessFailsWhenStateIsWedged(t *testing.T) {
	clock := clockwork.NewFakeClock()
	src := newSource("starting", clock.Now())
	s := newServer(t, src, WithClock(clock), WithStuckAfter(time.Minute))

	clock.Advance(time.Minute)
	if code, _ := probe(t, s.Handler(), "/livez"); code != http.StatusOK {
		t.Fatalf("livez at exactly StuckAfter = %d, want 200", code)
	}
	clock.Advance(time.Second)
	code, body := probe(t, s.Handler(), "/livez")
	if code != http.StatusServiceUnavailable || !strings.Contains(body.Output, "wedged") {
		t.Errorf("livez past StuckAfter in starting = %d (%q), want 503 wedged", code, body.Output)
	}
	if code, _ := probe(t, s.Handler(), "/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("healthz of a wedged instance = %d, want 503", code)
	}

	if err := s.Alive(); err == nil || !strings.Contains(err.Error(), "wedged") {
		t.Errorf("Alive() past StuckAfter in starting = %v, want an error saying wedged", err)
	}

	// running, pulling and draining (an operator may keep an instance out of
	// rotation for days) may last forever.
	for _, st := range []string{"running", "pulling", "draining"} {
		src.setState(st)
		if code, _ := probe(t, s.Handler(), "/livez"); code != http.StatusOK {
			t.Errorf("livez in %s after long time = %d, want 200", st, code)
		}
		if err := s.Alive(); err != nil {
			t.Errorf("Alive() in %s after long time = %v, want nil", st, err)
		}
	}
}

func TestAliveReportsAFailedInstance(t *testing.T) {
	clock := clockwork.NewFakeClock()
	src := newSource("running", clock.Now())
	s := newServer(t, src, WithClock(clock))
	if err := s.Alive(); err != nil {
		t.Fatalf("Alive() in running = %v, want nil", err)
	}
	src.setState("failed")
	if err := s.Alive(); err == nil || !strings.Contains(err.Error(), "failed") {
		t.Errorf("Alive() in failed = %v, want an error saying failed", err)
	}
}

func TestStuckAfterZeroDisablesWedgeDetection(t *testing.T) {
	clock := clockwork.NewFakeClock()
	s := newServer(t, newSource("starting", clock.Now()), WithClock(clock), WithStuckAfter(0))
	clock.Advance(24 * time.Hour)
	if code, _ := probe(t, s.Handler(), "/livez"); code != http.StatusOK {
		t.Errorf("livez = %d, want 200", code)
	}
}

func TestNewRejectsInvalidAddressNamingIt(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:99999", "nope", "127.0.0.1:-1", "127.0.0.1:http", ""} {
		_, err := New(newSource("init", time.Now()), WithAddr(addr))
		if !errors.Is(err, ErrInvalidAddr) {
			t.Errorf("New(WithAddr(%q)) = %v, want ErrInvalidAddr", addr, err)
			continue
		}
		if !strings.Contains(err.Error(), `"`+addr+`"`) {
			t.Errorf("error %q does not name %q", err, addr)
		}
	}
}

func TestStartFailsNamingAddressWhenPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	s := newServer(t, newSource("serving_health", time.Now()), WithAddr(addr))
	err = s.Start(context.Background())
	if err == nil {
		t.Fatalf("Start on taken %s succeeded", addr)
	}
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), addr) {
		t.Errorf("Start = %v, want EADDRINUSE naming %s", err, addr)
	}
}

func TestStartServesOnBoundAddressAndRunsFirstRound(t *testing.T) {
	var calls atomic.Int32
	s := newServer(t, newSource("running", time.Now()), WithAddr("127.0.0.1:0"),
		WithCheck("db:ping", func(context.Context) error { calls.Add(1); return nil }, Required()))
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 1 {
		t.Errorf("Start ran the checks %d times before serving, want 1", calls.Load())
	}
	if strings.HasSuffix(s.Addr(), ":0") {
		t.Fatalf("Addr() = %s, want the bound port", s.Addr())
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + s.Addr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /readyz over the listener = %d, want 200 (the first round passed)", resp.StatusCode)
	}
	if err := s.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start = %v, want ErrStarted", err)
	}
}

func TestShutdownIsIdempotentAndLeavesNoGoroutines(t *testing.T) {
	s, err := New(newSource("running", time.Now()), WithAddr("127.0.0.1:0"), WithCheck("db:ping", func(context.Context) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	for i := range 3 {
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatalf("Shutdown #%d: %v", i+1, err)
		}
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Shutdown", addr)
	}
	if err := s.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Shutdown = %v, want ErrClosed", err)
	}
	goleak.VerifyNone(t)
}

func TestShutdownBeforeStartIsSafe(t *testing.T) {
	s, err := New(newSource("init", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown before Start = %v", err)
	}
	s.Refresh(context.Background()) // a no-op now, and must not leak
}

func TestBackgroundRefresherRunsChecksEveryInterval(t *testing.T) {
	clock := clockwork.NewFakeClock()
	ran := make(chan struct{}, 10)
	s := newServer(t, newSource("running", clock.Now()), WithAddr("127.0.0.1:0"), WithClock(clock), WithInterval(5*time.Second),
		WithCheck("db:ping", func(context.Context) error { ran <- struct{}{}; return nil }))
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-ran // the first round, inside Start
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for round := 2; round <= 3; round++ {
		if err := clock.BlockUntilContext(ctx, 1); err != nil { // the refresher's ticker
			t.Fatal(err)
		}
		clock.Advance(5 * time.Second)
		select {
		case <-ran:
		case <-ctx.Done():
			t.Fatalf("round %d did not run after advancing the clock by the interval", round)
		}
	}
}

func TestWithHandlerMountsExtraEndpoints(t *testing.T) {
	s := newServer(t, newSource("running", time.Now()), WithHandler("GET /debug/lifecycle", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("table"))
	})))
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/lifecycle", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != "table" {
		t.Errorf("GET /debug/lifecycle = %d %q", rec.Code, rec.Body)
	}
}

func TestNewRejectsConflictingHandlerPatternNamingIt(t *testing.T) {
	_, err := New(newSource("init", time.Now()), WithHandler("GET /livez", http.NotFoundHandler()))
	if err == nil || !strings.Contains(err.Error(), `"GET /livez"`) {
		t.Errorf("New with a second GET /livez = %v, want an error naming the pattern", err)
	}
}

func TestNewRejectsDuplicateCheckNameNamingIt(t *testing.T) {
	nop := func(context.Context) error { return nil }
	_, err := New(newSource("init", time.Now()), WithCheck("db:ping", nop), WithCheck("db:ping", nop))
	if err == nil || !strings.Contains(err.Error(), `"db:ping"`) {
		t.Errorf("New with db:ping twice = %v, want an error naming it", err)
	}
}

func TestNilOptionsAreIgnored(t *testing.T) {
	s := newServer(t, newSource("running", time.Now()), nil, WithClock(nil), WithLogger(nil), WithRedis(nil, true), WithCheck("x", nil), WithHandler("/x", nil))
	if code, _ := probe(t, s.Handler(), "/readyz"); code != http.StatusOK {
		t.Errorf("readyz = %d, want 200: nil options must not add checks", code)
	}
}

func TestProbesAnswerHeadAndRejectOtherMethods(t *testing.T) {
	s := newServer(t, newSource("stopping_daemons", time.Now()))
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("HEAD /readyz in stopping_daemons = %d, want 503", rec.Code)
	}
	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/livez", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /livez = %d, want 405", rec.Code)
	}
}

func TestPanickingCheckFailsInsteadOfCrashing(t *testing.T) {
	s := newServer(t, newSource("running", time.Now()), WithAddr("127.0.0.1:0"),
		WithCheck("db:ping", func(context.Context) error { panic("driver bug") }, Required()))
	s.Refresh(context.Background())
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "check panicked: driver bug") {
		t.Fatalf("readyz = %d %s, want 503 naming the panic", rec.Code, rec.Body.String())
	}
}

func TestPassOutputIsShownWhileTheCheckPassesAndKeepsHealthzPassing(t *testing.T) {
	var failing atomic.Bool
	s := newServer(t, newSource("running", time.Now()), WithCheck("feature:mode", func(context.Context) error {
		if failing.Load() {
			return errors.New("broken")
		}
		return nil
	}, PassOutput("feature off on purpose")))
	s.Refresh(context.Background())
	code, body := probe(t, s.Handler(), "/healthz")
	if c := body.Checks["feature:mode"][0]; code != http.StatusOK || body.Status != StatusPass || c.Status != StatusPass || c.Output != "feature off on purpose" {
		t.Errorf("healthz = %d %q, check %+v, want pass with the note", code, body.Status, c)
	}
	failing.Store(true)
	s.Refresh(context.Background())
	if _, body := probe(t, s.Handler(), "/healthz"); body.Checks["feature:mode"][0].Output != "broken" || body.Status != StatusWarn {
		t.Errorf("failing check: %+v, want warn with its error", body.Checks["feature:mode"])
	}
}
