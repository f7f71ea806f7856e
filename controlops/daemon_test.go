package controlops

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
)

func TestWithKeyForgedEntriesAreRejectedAndASignedOneRuns(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	target := newTarget("svc", "i-1")
	startDaemon(t, rdb, target, WithKey(testKey))
	now := time.Now()

	unsigned := newOp(OpPull, "*", "nonce-unsigned", now)
	xadd(t, rdb, "svc", unsigned.Values())

	bad := Sign([]byte("not-the-key-at-all"), "svc", newOp(OpPull, "*", "nonce-badsig1", now))
	xadd(t, rdb, "svc", bad.Values())

	expired := Sign(testKey, "svc", newOp(OpPull, "*", "nonce-expired", now.Add(-time.Minute)))
	xadd(t, rdb, "svc", expired.Values())

	good := Sign(testKey, "svc", newOp(OpPull, "*", "nonce-good001", now))
	xadd(t, rdb, "svc", good.Values())
	xadd(t, rdb, "svc", good.Values()) // the same entry again: a replay

	rs := waitResults(t, rdb, "svc", 5)
	want := []struct {
		status Status
		reason string
	}{
		{StatusRejected, "unsigned"},
		{StatusRejected, "bad signature"},
		{StatusRejected, "expired"},
		{StatusDone, ""},
		{StatusRejected, "replay"},
	}
	for i, w := range want {
		if rs[i].Status != w.status || !strings.Contains(rs[i].Reason, w.reason) {
			t.Errorf("result %d: %s %q, want %s containing %q", i, rs[i].Status, rs[i].Reason, w.status, w.reason)
		}
		if rs[i].State != "running" {
			t.Errorf("result %d: state %q, want the instance still running", i, rs[i].State)
		}
	}
	if calls := target.Calls(); len(calls) != 1 || calls[0] != OpPull {
		t.Fatalf("ops executed: %v, want only the signed pull", calls)
	}
}

func TestMalformedEntriesAreRejectedAndReadingGoesOn(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	target := newTarget("svc", "i-1")
	startDaemon(t, rdb, target, WithInsecure(), WithBlock(50*time.Millisecond))

	xadd(t, rdb, "svc", map[string]any{"id": "x1", "op": "pull"}) // fields missing
	v := newOp(OpPull, "*", "nonce-args001", time.Now()).Values()
	v[FieldArgs] = "{broken"
	xadd(t, rdb, "svc", v)
	v = newOp(OpPull, "*", "nonce-huge001", time.Now()).Values()
	v[FieldArgs] = `"` + strings.Repeat("x", MaxArgsLen+1) + `"`
	xadd(t, rdb, "svc", v)
	xadd(t, rdb, "svc", newOp("echo", "i-2", "nonce-other01", time.Now()).Values())
	xadd(t, rdb, "svc", newOp("nosuchop", "i-1", "nonce-unkn001", time.Now()).Values())
	xadd(t, rdb, "svc", newOp("echo", "i-1", "nonce-echo001", time.Now()).Values())

	rs := waitResults(t, rdb, "svc", 6)
	for i, want := range []Status{StatusRejected, StatusRejected, StatusRejected, StatusIgnored, StatusRejected, StatusDone} {
		if rs[i].Status != want {
			t.Errorf("result %d: %s (%s), want %s", i, rs[i].Status, rs[i].Reason, want)
		}
	}
	if !strings.Contains(rs[1].Reason, `"args"`) || !strings.Contains(rs[4].Reason, "unknown operation") {
		t.Errorf("reasons do not say why: %q, %q", rs[1].Reason, rs[4].Reason)
	}
	if rs[0].OpID != "x1" {
		t.Errorf("malformed result op_id %q, want the entry's id x1", rs[0].OpID)
	}
}

func TestOpInvalidInStateIsRejectedAndAFailingOneFails(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	target := newTarget("svc", "i-1")
	target.fail[OpPull] = errors.New("settings unreadable")
	target.fail["echo"] = ErrInvalidState
	startDaemon(t, rdb, target, WithInsecure(), WithBlock(50*time.Millisecond))
	xadd(t, rdb, "svc", newOp(OpPull, "*", "nonce-pull001", time.Now()).Values())
	xadd(t, rdb, "svc", newOp("echo", "*", "nonce-echo001", time.Now()).Values())
	rs := waitResults(t, rdb, "svc", 2)
	if rs[0].Status != StatusFailed || !strings.Contains(rs[0].Reason, "settings unreadable") {
		t.Errorf("failing pull: %s %q", rs[0].Status, rs[0].Reason)
	}
	if rs[1].Status != StatusRejected {
		t.Errorf("op invalid in state: %s %q, want rejected", rs[1].Status, rs[1].Reason)
	}
}

func TestEntriesSentAfterARedisRestartAreHandledExactlyOnce(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	target := newTarget("svc", "i-1")
	d := startDaemon(t, rdb, target, WithInsecure())
	xadd(t, rdb, "svc", newOp("echo", "*", "nonce-before1", time.Now()).Values())
	waitResults(t, rdb, "svc", 1)

	srv.Restart() // empty data set; the daemon is in XREAD BLOCK meanwhile
	xadd(t, rdb, "svc", newOp("echo", "*", "nonce-after01", time.Now()).Values())
	xadd(t, rdb, "svc", newOp("echo", "*", "nonce-after02", time.Now()).Values())
	rs := waitResults(t, rdb, "svc", 2)
	if len(rs) != 2 || rs[0].OpID != "op-nonce-after01" || rs[1].OpID != "op-nonce-after02" {
		t.Fatalf("results after restart: %+v", rs)
	}
	// Give a repeat every chance to show: the daemon reads twice more.
	xadd(t, rdb, "svc", newOp("echo", "*", "nonce-after03", time.Now()).Values())
	waitResults(t, rdb, "svc", 3)
	if calls := target.Calls(); len(calls) != 4 {
		t.Fatalf("executed %d ops (%v), want 4: each exactly once", len(calls), calls)
	}
	if d.LastID() != rs[1].Entry && !strings.HasPrefix(d.LastID(), strings.Split(rs[1].Entry, "-")[0]) {
		t.Logf("last id %s", d.LastID())
	}
}

// An idle daemon blocks in XREAD for DefaultBlock (30s) at a time, so it
// costs Redis two commands per 30s; Stop still returns at once, because it
// closes the daemon's own connection (go-redis does not end a blocked read
// when its context ends).
func TestStopUnblocksAWaitingReadPromptly(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	d, err := New(rdb, newTarget("svc", "i-1"), WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d.cfg.block != DefaultBlock {
		t.Fatalf("block %v through a client of its own, want DefaultBlock %v", d.cfg.block, DefaultBlock)
	}
	// Let the read block: wait until Redis lists a blocked client.
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(rdb.Info(context.Background(), "clients").Val(), "blocked_clients:1") {
		if time.Now().After(deadline) {
			t.Fatal("the daemon never blocked in XREAD")
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	if err := d.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	el := time.Since(start)
	t.Logf("Stop took %v with a %v block in flight", el, DefaultBlock)
	if el > time.Second {
		t.Fatalf("Stop took %v with a %v block", el, DefaultBlock)
	}
}

// sharedClient is a client the daemon cannot copy: it reads through it, and
// Stop cannot close it.
type sharedClient struct{ *redis.Client }

// Through a client it cannot copy, the daemon cannot guard its reads: it
// never blocks in XREAD there, it polls the stream with a script that sizes
// each entry in Redis (blockread.Scan) every DefaultSharedBlock, so an
// oversized entry is still rejected unread, and Stop ends a wait at once.
func TestADaemonOnAClientItCannotCopyPollsBoundedAndStopsAtOnce(t *testing.T) {
	rdb := sharedClient{redistest.Server(t).Client(t)}
	target := newTarget("svc", "i-1")
	d := startDaemon(t, rdb, target, WithInsecure())
	if d.cfg.block != DefaultSharedBlock {
		t.Fatalf("block %v through the caller's client, want DefaultSharedBlock %v", d.cfg.block, DefaultSharedBlock)
	}
	big := newOp("echo", "*", "nonce-big0001", time.Now()).Values()
	big[FieldArgs] = strings.Repeat("x", 8<<20)
	before := allocated()
	xadd(t, rdb, "svc", big)
	sent := time.Now()
	xadd(t, rdb, "svc", newOp("echo", "*", "nonce-small01", time.Now()).Values())
	rs := waitResults(t, rdb, "svc", 2)
	took := time.Since(sent)
	if alloc := allocated() - before; alloc > 4<<20 {
		t.Errorf("%d bytes allocated: the 8 MB entry was loaded", alloc)
	}
	if rs[0].Status != StatusRejected || !strings.Contains(rs[0].Reason, "oversized") || rs[1].Status != StatusDone {
		t.Fatalf("results %+v: want the oversized op rejected and the next one done", rs)
	}
	t.Logf("both ops handled %v after they were sent (polling every %v)", took, DefaultSharedBlock)
	if took > DefaultSharedBlock+2*time.Second {
		t.Fatalf("handled %v after they were sent, polling every %v", took, DefaultSharedBlock)
	}
	if n := blockedClients(t, rdb); n != 0 {
		t.Fatalf("%d clients blocked in Redis: the daemon blocked on the caller's client", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := d.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("Stop took %v", el)
	}
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("Stop closed the caller's client: %v", err)
	}
}

func TestStartPositionExcludesOldEntriesAndKeepsNewOnes(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	xadd(t, rdb, "svc", newOp("echo", "*", "nonce-old0001", time.Now()).Values())
	target := newTarget("svc", "i-1")
	startDaemon(t, rdb, target, WithInsecure(), WithBlock(50*time.Millisecond))
	xadd(t, rdb, "svc", newOp("echo", "*", "nonce-new0001", time.Now()).Values())
	rs := waitResults(t, rdb, "svc", 1)
	if len(rs) != 1 || rs[0].OpID != "op-nonce-new0001" {
		t.Fatalf("results %+v: want only the entry sent after Start", rs)
	}
}

func TestBackoffUsesTheInjectedClock(t *testing.T) {
	clock := clockwork.NewFakeClock()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	d, err := New(rdb, newTarget("svc", "i-1"), WithLogger(quiet), WithClock(clock), WithBackoff(time.Second, 4*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatalf("Start must not fail while Redis is down: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		if err := clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatalf("retry %d: the daemon is not waiting on the clock: %v", i, err)
		}
		clock.Advance(4 * time.Second)
	}
	if err := d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if d.LastID() != "" {
		t.Fatalf("position %q resolved without Redis", d.LastID())
	}
}

func TestTheDaemonRetriesAfterAJitteredWaitDrawnFromItsBackoffAndWarnsOncePerMinute(t *testing.T) {
	clock := clockwork.NewFakeClock()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	var logs logBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	// The jitter draws the middle of every interval: waits of 500ms, 1s, 2s.
	d, err := New(rdb, newTarget("svc", "i-1"), WithLogger(log), WithClock(clock),
		WithBackoff(time.Second, 4*time.Second), withRand(func() float64 { return 0.5 }))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	defer func() { _ = d.Stop(ctx) }()
	warns := func() []string {
		var out []string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "control stream reads failing") {
				out = append(out, l)
			}
		}
		return out
	}
	waiting := func(step string) {
		t.Helper()
		if err := clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatalf("%s: the daemon is not waiting on the clock: %v", step, err)
		}
	}

	waiting("first failure")
	if w := warns(); len(w) != 1 || !strings.Contains(w[0], "retry_in=500ms") || !strings.Contains(w[0], "level=WARN") || !strings.Contains(w[0], "error=") {
		t.Fatalf("after the first failure, warn lines %q; want one, retry_in=500ms, with the error", w)
	}
	clock.Advance(500 * time.Millisecond)
	waiting("second failure")
	if w := warns(); len(w) != 1 {
		t.Fatalf("the second failure, within the minute, was logged: %q", w)
	}
	// A minute on, the third failure (ceiling 4s, drawn at half) is logged,
	// counting the one left out.
	clock.Advance(time.Minute)
	waiting("third failure")
	if w := warns(); len(w) != 2 || !strings.Contains(w[1], "retry_in=2s") || !strings.Contains(w[1], "suppressed=1") {
		t.Fatalf("after a minute, warn lines %q; want a second one, retry_in=2s, suppressed=1", w)
	}
}

func TestClientWaitReportsEachInstancesResult(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	for _, id := range []string{"a", "b", "c"} {
		startDaemon(t, rdb, newTarget("svc", id), WithKey(testKey))
	}
	c := NewClient(rdb, testKey)
	op, err := c.Send(context.Background(), "svc", "echo", "b", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var mu sync.Mutex
	var seen []string
	final, err := c.Wait(ctx, "svc", op, []string{"a", "b", "c"}, func(r Result) {
		mu.Lock()
		seen = append(seen, r.Instance+"="+string(r.Status))
		mu.Unlock()
	})
	if err != nil {
		t.Fatalf("Wait: %v (seen %v)", err, seen)
	}
	if final["b"].Status != StatusDone || final["a"].Status != StatusIgnored || final["c"].Status != StatusIgnored {
		t.Fatalf("final results %+v", final)
	}
	if final["b"].KeyID != KeyID(testKey) {
		t.Errorf("done result names key %q, want %q", final["b"].KeyID, KeyID(testKey))
	}
	if len(seen) != 3 {
		t.Fatalf("fn saw %v", seen)
	}
}

func TestClientWaitNamesTheMissingInstancesOnTimeout(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	c := NewClient(rdb, nil)
	op, err := c.Send(context.Background(), "svc", "echo", "ghost", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = c.Wait(ctx, "svc", op, nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "ghost") {
		t.Fatalf("Wait: %v, want a deadline error naming ghost", err)
	}
}

func TestClientSendRefusesWhatTheDaemonWouldReject(t *testing.T) {
	c := NewClient(redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), nil)
	defer c.rdb.Close()
	for _, tc := range []struct{ service, op, target string }{
		{"{bad}", "pull", "*"}, {"svc", "Bad Op", "*"}, {"svc", "pull", "a b"},
	} {
		if _, err := c.Send(context.Background(), tc.service, tc.op, tc.target, nil); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%+v: %v, want ErrInvalidRequest", tc, err)
		}
	}
}

func TestRollingRestartLetsOnlyMaxUnavailableInstancesGoAtOnce(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	a, b := newTarget("svc", "a"), newTarget("svc", "b")
	opts := []Option{WithKey(testKey), WithSlotWait(300*time.Millisecond, 10*time.Millisecond)}
	daemons := map[string]*Daemon{"a": startDaemon(t, rdb, a, opts...), "b": startDaemon(t, rdb, b, opts...)}
	c := NewClient(rdb, testKey)
	op, err := c.Send(context.Background(), "svc", OpRestart, TargetAll, RestartArgs{MaxUnavailable: 1})
	if err != nil {
		t.Fatal(err)
	}
	// One instance takes the slot and restarts; it never comes back here, so
	// the other's wait runs out.
	rs := waitResults(t, rdb, "svc", 2)
	var accepted, failed []string
	for _, r := range rs {
		switch r.Status {
		case StatusAccepted:
			accepted = append(accepted, r.Instance)
		case StatusFailed:
			failed = append(failed, r.Instance)
			if !strings.Contains(r.Reason, "no restart slot") {
				t.Errorf("failed reason %q", r.Reason)
			}
		}
	}
	if len(accepted) != 1 || len(failed) != 1 {
		t.Fatalf("results %+v: want one accepted, one failed for lack of a slot", rs)
	}
	if n := rdb.ZCard(context.Background(), SlotsKey("svc")).Val(); n != 1 {
		t.Fatalf("%d slots taken, want 1", n)
	}

	// The restarted instance's new process: resumes at the restart entry,
	// reaches running, reports done and gives the slot back.
	old := daemons[accepted[0]]
	if err := old.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	again := newTarget("svc", accepted[0])
	d := startDaemon(t, rdb, again, append(opts, WithHandOver(old.HandOver()))...)
	if d.LastID() != op.StreamID {
		t.Errorf("new process starts at %s, want the restart entry %s", d.LastID(), op.StreamID)
	}
	d.Running()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	final, err := c.Wait(ctx, "svc", op, []string{"a", "b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := final[accepted[0]]; r.Status != StatusDone || !r.Verified {
		t.Fatalf("final %+v: want the new process's done, signed with the key that verified the restart", final)
	}
	if n := rdb.ZCard(context.Background(), SlotsKey("svc")).Val(); n != 0 {
		t.Fatalf("%d slots still taken after the new process ran", n)
	}
	if len(again.Calls()) != 0 {
		t.Fatalf("new process executed %v: the restart must not run twice", again.Calls())
	}
}

func TestResumedRestartRunsTheOpsSentMeanwhileOnceRunning(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	opts := []Option{WithKey(testKey), WithBlock(50 * time.Millisecond)}
	old := startDaemon(t, rdb, newTarget("svc", "i-1"), opts...)
	c := NewClient(rdb, testKey)
	restart, err := c.Send(context.Background(), "svc", OpRestart, "i-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitResults(t, rdb, "svc", 1)
	pull, err := c.Send(context.Background(), "svc", OpPull, "i-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The next process boots: its daemon starts at phase 8.5, before running,
	// with the pull already in the stream.
	next := newTarget("svc", "i-1")
	next.strict = true
	next.setState("registering")
	d := startDaemon(t, rdb, next, append(opts, WithHandOver(old.HandOver()))...)
	if d.LastID() != restart.StreamID {
		t.Fatalf("resumes at %s, want the restart entry %s", d.LastID(), restart.StreamID)
	}
	next.setState("running")
	d.Running()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	final, err := c.Wait(ctx, "svc", pull, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := final["i-1"]; r.Status != StatusDone {
		t.Fatalf("pull sent during the restart: %s %q, want done once the next process runs", r.Status, r.Reason)
	}
}

func TestRestartBeginsFromRunningOrDrainingOnly(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	target := newTarget("svc", "i-1")
	target.setState("starting")
	startDaemon(t, rdb, target, WithInsecure(), WithBlock(50*time.Millisecond))
	xadd(t, rdb, "svc", newOp(OpRestart, "*", "nonce-rest001", time.Now()).Values())
	rs := waitResults(t, rdb, "svc", 1)
	if rs[0].Status != StatusRejected || !strings.Contains(rs[0].Reason, `restart in state "starting"`) {
		t.Errorf("restart while starting: %s %q, want rejected naming the state", rs[0].Status, rs[0].Reason)
	}
	target.setState("draining") // an operator drained it first
	xadd(t, rdb, "svc", newOp(OpRestart, "*", "nonce-rest002", time.Now()).Values())
	rs = waitResults(t, rdb, "svc", 2)
	if rs[1].Status != StatusAccepted {
		t.Errorf("restart while draining: %s %q, want accepted", rs[1].Status, rs[1].Reason)
	}
	if calls := target.Calls(); len(calls) != 1 || calls[0] != OpRestart {
		t.Errorf("ops executed: %v, want the one restart from draining", calls)
	}
}

func TestARestartIsRejectedWhenTheTargetSaysItMayNotBeginThoughItIsRunning(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	target := newTarget("svc", "i-1")
	target.mu.Lock()
	target.stopping = true // a stop was asked for; the state still reads running
	target.mu.Unlock()
	startDaemon(t, rdb, target, WithInsecure(), WithBlock(50*time.Millisecond))
	xadd(t, rdb, "svc", newOp(OpRestart, "*", "nonce-stop0001", time.Now()).Values())
	rs := waitResults(t, rdb, "svc", 1)
	if rs[0].Status != StatusRejected || !strings.Contains(rs[0].Reason, `restart in state "running"`) {
		t.Errorf("restart while stopping: %s %q, want rejected", rs[0].Status, rs[0].Reason)
	}
	if calls := target.Calls(); len(calls) != 0 {
		t.Errorf("ops executed: %v, want none", calls)
	}
}
