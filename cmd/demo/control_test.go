package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// The demo with REDIS_URL set is a service like any other: these tests run
// demo processes against a real redis-server and send them control ops the
// way sgctl does.

var (
	newKey   = "new-demo-key-0123456789"
	oldKey   = "old-demo-key-0123456789"
	thirdKey = "third-demo-key-01234567"
)

// startService starts a demo process as instance id of service demo on srv.
func startService(t *testing.T, srv *redistest.Srv, id string, env ...string) *proctest.Proc {
	t.Helper()
	if testing.Short() {
		t.Skip("runs cmd/demo processes against a real redis-server")
	}
	return startDemo(t, append([]string{"REDIS_URL=" + srv.URL(), "SG_SERVICE_NAME=demo", "SG_INSTANCE_ID=" + id, "SG_HEALTH_HOST=127.0.0.1"}, env...)...)
}

// runningEntry polls the registry until id is running, and returns its entry.
func runningEntry(t *testing.T, p *proctest.Proc, reg *registry.Registry, id string) registry.Entry {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		e, err := reg.Entry(t.Context(), "demo", id)
		if err == nil && e.Status == "running" {
			return e
		}
		select {
		case <-p.Done():
			t.Fatalf("demo %s exited (exit code %d) before running", id, p.Wait(t))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never ran: %+v %v", id, e, err)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// send writes op (already signed or not) to demo's stream and waits for
// instance id's final result.
func send(t *testing.T, rdb redis.UniversalClient, op controlops.Op, id string) controlops.Result {
	t.Helper()
	sid, err := rdb.XAdd(t.Context(), &redis.XAddArgs{Stream: controlops.StreamKey("demo"), Values: op.Values()}).Result()
	if err != nil {
		t.Fatal(err)
	}
	op.StreamID = sid
	return waitFinal(t, rdb, op, id)
}

func waitFinal(t *testing.T, rdb redis.UniversalClient, op controlops.Op, id string) controlops.Result {
	t.Helper()
	// An op sent after a FLUSHALL in the millisecond of the last one the
	// daemon handled gets that one's id: the daemon finds it when its
	// blocked read ends, within controlops.DefaultBlock.
	ctx, cancel := context.WithTimeout(t.Context(), controlops.DefaultBlock+15*time.Second)
	defer cancel()
	final, err := controlops.NewClient(rdb, nil).Wait(ctx, "demo", op, []string{id}, nil)
	if err != nil {
		t.Fatalf("%s %s: %v", op.Name, op.ID, err)
	}
	return final[id]
}

var opSeq int

// newOp returns an op for every instance of demo issued at at, signed with
// key ("" leaves it unsigned).
func newOp(name, key string, at time.Time) controlops.Op {
	opSeq++
	o := controlops.Op{ID: fmt.Sprintf("test-%d-%d", at.UnixNano(), opSeq), Name: name, Target: controlops.TargetAll,
		IssuedAt: at.Truncate(time.Millisecond), TTL: time.Minute, Nonce: fmt.Sprintf("nonce-%d-%d", at.UnixNano(), opSeq)}
	if key != "" {
		o = controlops.Sign([]byte(key), "demo", o)
	}
	return o
}

// controlCheck returns the status and output of /healthz's control:auth.
func controlCheck(t *testing.T, healthAddr string) (string, string) {
	t.Helper()
	resp, err := http.Get("http://" + healthAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body struct {
		Checks map[string][]struct{ Status, Output string } `json:"checks"`
	}
	if err := json.Unmarshal(raw, &body); err != nil || len(body.Checks["control:auth"]) != 1 {
		t.Fatalf("/healthz: %v\n%s", err, raw)
	}
	c := body.Checks["control:auth"][0]
	return c.Status, c.Output
}

func TestDemoWithRedisURLAndNoKeyRejectsUnsignedRestartAndPull(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	reg := registry.New(rdb)
	p := startService(t, srv, "demo-1")
	before := runningEntry(t, p, reg, "demo-1")
	if before.Control != "disabled" {
		t.Errorf("registry control %q, want disabled", before.Control)
	}
	for _, name := range []string{controlops.OpRestart, controlops.OpPull} {
		r := send(t, rdb, newOp(name, "", time.Now()), "demo-1")
		if r.Status != controlops.StatusRejected || !strings.Contains(r.Reason, "SG_CONTROL_KEY") || !strings.Contains(r.Reason, "SG_CONTROL_INSECURE=true") {
			t.Errorf("unsigned %s: %s %q, want rejected saying how to enable ops", name, r.Status, r.Reason)
		}
	}
	// The restart would have shown by now: the rejection is written before
	// anything else happens.
	after := runningEntry(t, p, reg, "demo-1")
	if !after.StartedAt.Equal(before.StartedAt) || after.PID != before.PID {
		t.Errorf("started_at %v pid %d, was %v pid %d: the instance restarted", after.StartedAt, after.PID, before.StartedAt, before.PID)
	}
	if status, out := controlCheck(t, after.HealthAddr); status != "pass" || !strings.Contains(out, "control ops disabled") {
		t.Errorf("/healthz control:auth %s %q, want pass saying ops are disabled", status, out)
	}
	if strings.Contains(p.Output(), "demo: settings re-read") {
		t.Error("the pull handler ran")
	}
	if !strings.Contains(p.Output(), "control ops are disabled") {
		t.Error("the log does not say control ops are disabled")
	}
}

func TestDemoWithInsecureOptInRunsAnUnsignedPullAndHealthzWarns(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	reg := registry.New(rdb)
	p := startService(t, srv, "demo-1", "SG_CONTROL_INSECURE=true")
	e := runningEntry(t, p, reg, "demo-1")
	if e.Control != "insecure" {
		t.Errorf("registry control %q, want insecure", e.Control)
	}
	if r := send(t, rdb, newOp(controlops.OpPull, "", time.Now()), "demo-1"); r.Status != controlops.StatusDone {
		t.Errorf("unsigned pull: %s %q, want done", r.Status, r.Reason)
	}
	if status, out := controlCheck(t, e.HealthAddr); status != "warn" || !strings.Contains(out, "unsigned control ops accepted") {
		t.Errorf("/healthz control:auth %s %q, want warn", status, out)
	}
	if !strings.Contains(p.Output(), "SG_CONTROL_INSECURE=true: unsigned control ops are accepted") {
		t.Error("no warning at boot")
	}
}

func TestDemoBadControlInsecureValueExitsTwoNamingIt(t *testing.T) {
	srv := redistest.Server(t)
	p := startService(t, srv, "demo-1", "SG_CONTROL_INSECURE=yes please")
	if code := p.Wait(t); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	if out := p.Output(); !strings.Contains(out, `SG_CONTROL_INSECURE=\"yes please\"`) {
		t.Errorf("output does not name the variable and its value:\n%s", out)
	}
}

func TestDemoHoldingTwoKeysAcceptsEitherRejectsAThirdAndNamesTheKey(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	reg := registry.New(rdb)
	p := startService(t, srv, "demo-1", "SG_CONTROL_KEY="+newKey+","+oldKey)
	if e := runningEntry(t, p, reg, "demo-1"); e.Control != "signed" {
		t.Errorf("registry control %q, want signed", e.Control)
	}
	for _, tc := range []struct {
		key    string
		status controlops.Status
		id     string
	}{
		{newKey, controlops.StatusDone, controlops.KeyID([]byte(newKey))},
		{oldKey, controlops.StatusDone, controlops.KeyID([]byte(oldKey))},
		{thirdKey, controlops.StatusRejected, ""},
	} {
		r := send(t, rdb, newOp(controlops.OpPull, tc.key, time.Now()), "demo-1")
		if r.Status != tc.status || r.KeyID != tc.id {
			t.Errorf("pull signed with %s: %s (key id %q, %q), want %s with key id %q", controlops.KeyID([]byte(tc.key)), r.Status, r.KeyID, r.Reason, tc.status, tc.id)
		}
	}
	if out := p.Output(); strings.Contains(out, newKey) || strings.Contains(out, oldKey) {
		t.Error("a key reached the log")
	}
}

func TestDemoRejectsASignedOpReplayedAfterFlushallARedisRestartAndToALaterProcess(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	reg := registry.New(rdb)
	first := startService(t, srv, "demo-1", "SG_CONTROL_KEY="+newKey)
	started := runningEntry(t, first, reg, "demo-1").StartedAt
	// Issued 4.5s before the first process started (within the 5s skew, so it
	// accepts it) and valid for a minute: a process started 0.5s after the
	// first one is already too young for it, which spares the test a wait.
	captured := newOp(controlops.OpPull, newKey, started.Add(-4500*time.Millisecond))
	if r := send(t, rdb, captured, "demo-1"); r.Status != controlops.StatusDone {
		t.Fatalf("the op: %s %q, want done", r.Status, r.Reason)
	}
	if err := rdb.FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	if r := send(t, rdb, captured, "demo-1"); r.Status != controlops.StatusRejected || !strings.Contains(r.Reason, "replay") {
		t.Errorf("replayed after FLUSHALL: %s %q, want rejected as a replay", r.Status, r.Reason)
	}
	srv.Restart()
	if r := send(t, rdb, captured, "demo-1"); r.Status != controlops.StatusRejected || !strings.Contains(r.Reason, "replay") {
		t.Errorf("replayed after a redis-server restart: %s %q, want rejected as a replay", r.Status, r.Reason)
	}
	if n := strings.Count(first.Output(), `msg="demo: settings re-read"`); n != 1 {
		t.Errorf("the pull handler ran %d times, want once", n)
	}

	// The instance's next process, started by hand (no hand-over).
	_ = first.Signal(syscall.SIGTERM)
	if code := first.Wait(t); code != 0 {
		t.Fatalf("first process exited %d", code)
	}
	for time.Now().Before(started.Add(600 * time.Millisecond)) {
		time.Sleep(10 * time.Millisecond) // until a new process is young enough, bounded by 600ms
	}
	srv.Restart() // no nonce claim left anywhere in Redis
	second := startService(t, srv, "demo-1", "SG_CONTROL_KEY="+newKey)
	if e := runningEntry(t, second, reg, "demo-1"); !e.StartedAt.After(started) {
		t.Fatalf("second process started_at %v, not after %v", e.StartedAt, started)
	}
	if r := send(t, rdb, captured, "demo-1"); r.Status != controlops.StatusRejected || !strings.Contains(r.Reason, "stale") {
		t.Errorf("replayed to a process started after it was issued: %s %q, want rejected as stale", r.Status, r.Reason)
	}
	if strings.Contains(second.Output(), `msg="demo: settings re-read"`) {
		t.Error("the second process ran the pull")
	}
}

func TestDemoRestartByExecRunsOpsSentMeanwhileAndRejectsReplaysOfWhatItHandled(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	reg := registry.New(rdb)
	p := startService(t, srv, "demo-1", "SG_CONTROL_KEY="+newKey)
	before := runningEntry(t, p, reg, "demo-1")

	restart := newOp(controlops.OpRestart, newKey, time.Now())
	rid, err := rdb.XAdd(t.Context(), &redis.XAddArgs{Stream: controlops.StreamKey("demo"), Values: restart.Values()}).Result()
	if err != nil {
		t.Fatal(err)
	}
	restart.StreamID = rid
	// Right behind it: the old process reads nothing after a restart, so
	// this one is for the next process.
	meanwhile := newOp(controlops.OpPull, newKey, time.Now())
	mid, err := rdb.XAdd(t.Context(), &redis.XAddArgs{Stream: controlops.StreamKey("demo"), Values: meanwhile.Values()}).Result()
	if err != nil {
		t.Fatal(err)
	}
	meanwhile.StreamID = mid
	if r := waitFinal(t, rdb, restart, "demo-1"); r.Status != controlops.StatusDone || r.PID != before.PID {
		t.Fatalf("restart: %s %q pid %d, want done by the exec'd process (pid %d)", r.Status, r.Reason, r.PID, before.PID)
	}
	if r := waitFinal(t, rdb, meanwhile, "demo-1"); r.Status != controlops.StatusDone {
		t.Fatalf("pull sent during the restart: %s %q, want done by the next process", r.Status, r.Reason)
	}
	after := runningEntry(t, p, reg, "demo-1")
	if !after.StartedAt.After(before.StartedAt) || after.PID != before.PID {
		t.Fatalf("after the restart: started_at %v pid %d (was %v pid %d), want a new image in the same process", after.StartedAt, after.PID, before.StartedAt, before.PID)
	}

	// Wipe Redis and replay both: the restart's nonce came through the
	// environment, the pull's is the new process's own.
	if err := rdb.FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	for _, op := range []controlops.Op{restart, meanwhile} {
		if r := send(t, rdb, op, "demo-1"); r.Status != controlops.StatusRejected || !strings.Contains(r.Reason, "replay") {
			t.Errorf("replayed %s: %s %q, want rejected as a replay", op.Name, r.Status, r.Reason)
		}
	}
	if n := strings.Count(p.Output(), "restarting: replacing the process"); n != 1 {
		t.Errorf("the process restarted %d times, want once: the replayed restart ran", n)
	}
}

var embeddedAddr = regexp.MustCompile(`msg="embedded redis \(miniredis\) started[^\n]* addr=(\S+)`)

func TestDemoOnEmbeddedRedisAcceptsUnsignedOpsAndSaysSo(t *testing.T) {
	p := startDemo(t)
	p.WaitFor(t, "boot completed")
	out := p.Output()
	if !strings.Contains(out, "insecure control mode on the embedded redis") {
		t.Errorf("the demo does not say it runs in insecure mode:\n%s", out)
	}
	m := embeddedAddr.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no embedded redis address in the log:\n%s", out)
	}
	rdb := redis.NewClient(&redis.Options{Addr: m[1]})
	t.Cleanup(func() { _ = rdb.Close() })
	if e := runningEntry(t, p, registry.New(rdb), mustInstance(t, out)); e.Control != "insecure" {
		t.Errorf("registry control %q, want insecure", e.Control)
	}
	if r := send(t, rdb, newOp(controlops.OpPull, "", time.Now()), mustInstance(t, out)); r.Status != controlops.StatusDone {
		t.Errorf("unsigned pull: %s %q, want done", r.Status, r.Reason)
	}
}

var bootStarted = regexp.MustCompile(`msg="boot started" service=demo instance=(\S+)`)

func mustInstance(t *testing.T, out string) string {
	t.Helper()
	m := bootStarted.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no instance id in the log:\n%s", out)
	}
	return m[1]
}
