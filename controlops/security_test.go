package controlops

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/stargazer/lifecycle/internal/redistest"
)

var (
	newKey   = []byte("new-key-0123456789abcdef")
	oldKey   = []byte("old-key-0123456789abcdef")
	thirdKey = []byte("third-key-0123456789abcd")
)

func TestWithoutKeyOrOptInEveryOpIsRejectedSayingHowToEnableOps(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	target := newTarget("svc", "i-1")
	d := startDaemon(t, rdb, target, WithBlock(50*time.Millisecond))
	if d.Mode() != ModeDisabled {
		t.Fatalf("mode %q without key or opt-in, want disabled", d.Mode())
	}
	now := time.Now()
	xadd(t, rdb, "svc", newOp(OpRestart, "*", "nonce-restart", now).Values())
	xadd(t, rdb, "svc", newOp(OpPull, "i-1", "nonce-pull001", now).Values())
	xadd(t, rdb, "svc", Sign(testKey, "svc", newOp(OpPull, "*", "nonce-signed1", now)).Values())
	xadd(t, rdb, "svc", newOp(OpPull, "i-2", "nonce-other01", now).Values())

	rs := waitResults(t, rdb, "svc", 4)
	for i, r := range rs[:3] {
		if r.Status != StatusRejected || !strings.Contains(r.Reason, "SG_CONTROL_KEY") || !strings.Contains(r.Reason, "SG_CONTROL_INSECURE=true") {
			t.Errorf("result %d: %s %q, want rejected saying how to enable ops", i, r.Status, r.Reason)
		}
	}
	if rs[3].Status != StatusIgnored {
		t.Errorf("op for another instance: %s, want ignored", rs[3].Status)
	}
	if calls := target.Calls(); len(calls) != 0 {
		t.Fatalf("executed %v with control ops disabled", calls)
	}
	if n := mr.Exists(PendingKey("svc", "i-1")); n {
		t.Fatal("a restart hand-over was written with control ops disabled")
	}
}

func TestInsecureModeAcceptsUnsignedOpsAndAKeyOverridesIt(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	insecure := newTarget("svc", "i-1")
	if d := startDaemon(t, rdb, insecure, WithInsecure(), WithBlock(50*time.Millisecond)); d.Mode() != ModeInsecure {
		t.Fatalf("mode %q, want insecure", d.Mode())
	}
	keyed := newTarget("svc", "i-2")
	if d := startDaemon(t, rdb, keyed, WithInsecure(), WithKey(testKey), WithBlock(50*time.Millisecond)); d.Mode() != ModeSigned {
		t.Fatalf("mode %q with a key and the opt-in, want signed", d.Mode())
	}
	xadd(t, rdb, "svc", newOp(OpPull, "*", "nonce-pull001", time.Now()).Values())
	rs := waitResults(t, rdb, "svc", 2)
	got := map[string]Result{rs[0].Instance: rs[0], rs[1].Instance: rs[1]}
	if r := got["i-1"]; r.Status != StatusDone || r.KeyID != "" {
		t.Errorf("insecure instance: %+v, want done without a key id", r)
	}
	if r := got["i-2"]; r.Status != StatusRejected || !strings.Contains(r.Reason, "unsigned") {
		t.Errorf("instance with a key: %s %q, want rejected as unsigned", r.Status, r.Reason)
	}
}

func TestRotationAcceptsOpsSignedWithAnyListedKeyAndNamesIt(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	target := newTarget("svc", "i-1")
	startDaemon(t, rdb, target, WithKeys(newKey, oldKey), WithBlock(50*time.Millisecond))

	for _, k := range [][]byte{newKey, oldKey, thirdKey} {
		if _, err := NewClient(rdb, k).Send(context.Background(), "svc", OpPull, "*", nil); err != nil {
			t.Fatal(err)
		}
	}
	rs := waitResults(t, rdb, "svc", 3)
	if rs[0].Status != StatusDone || rs[0].KeyID != KeyID(newKey) {
		t.Errorf("signed with the new key: %s, key id %q, want done by %s", rs[0].Status, rs[0].KeyID, KeyID(newKey))
	}
	if rs[1].Status != StatusDone || rs[1].KeyID != KeyID(oldKey) {
		t.Errorf("signed with the old key: %s, key id %q, want done by %s", rs[1].Status, rs[1].KeyID, KeyID(oldKey))
	}
	if rs[2].Status != StatusRejected || !strings.Contains(rs[2].Reason, "bad signature") || rs[2].KeyID != "" {
		t.Errorf("signed with a third key: %+v, want rejected, bad signature, no key id", rs[2])
	}
	if calls := target.Calls(); len(calls) != 2 {
		t.Fatalf("executed %v, want the two pulls signed with a listed key", calls)
	}
}

func TestAStaleOpIsRejectedAlthoughStillInItsWindow(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	target := newTarget("svc", "i-1")
	d := startDaemon(t, rdb, target, WithKey(testKey), WithBlock(50*time.Millisecond))
	nb := d.NotBefore()
	old := newOp(OpPull, "*", "nonce-old0001", nb.Add(-6*time.Second))
	old.TTL = time.Minute
	recent := newOp(OpPull, "*", "nonce-recent1", nb.Add(-4*time.Second))
	recent.TTL = time.Minute
	xadd(t, rdb, "svc", Sign(testKey, "svc", old).Values())
	xadd(t, rdb, "svc", Sign(testKey, "svc", recent).Values())
	rs := waitResults(t, rdb, "svc", 2)
	if rs[0].Status != StatusRejected || !strings.Contains(rs[0].Reason, "stale") {
		t.Errorf("op issued 6s before the process started: %s %q, want rejected as stale", rs[0].Status, rs[0].Reason)
	}
	if rs[1].Status != StatusDone {
		t.Errorf("op issued 4s before (within the skew): %s %q, want done", rs[1].Status, rs[1].Reason)
	}
}

// replay adds the entry's values again, as someone with write access to Redis
// would after capturing it.
func replay(t *testing.T, rdb redis.UniversalClient, service string, values map[string]any) {
	t.Helper()
	xadd(t, rdb, service, values)
}

func TestSignedOpReplayedAfterFlushallAndARedisRestartIsRejected(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	target := newTarget("svc", "i-1")
	// This process started 10s ago; the op was issued 6s ago, after it.
	startDaemon(t, rdb, target, WithKey(testKey), WithNotBefore(time.Now().Add(-10*time.Second)))
	op := newOp(OpPull, "*", "nonce-captured", time.Now().Add(-6*time.Second))
	op.TTL = time.Minute
	captured := Sign(testKey, "svc", op).Values()
	xadd(t, rdb, "svc", captured)
	if r := waitResults(t, rdb, "svc", 1)[0]; r.Status != StatusDone {
		t.Fatalf("the original op: %s %q, want done", r.Status, r.Reason)
	}

	// The nonce claim in Redis is gone: only the process's memory remembers.
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	replay(t, rdb, "svc", captured)
	if r := waitResults(t, rdb, "svc", 1)[0]; r.Status != StatusRejected || !strings.Contains(r.Reason, "replay") {
		t.Fatalf("replayed after FLUSHALL: %s %q, want rejected as a replay", r.Status, r.Reason)
	}
	srv.Restart()
	replay(t, rdb, "svc", captured)
	if r := waitResults(t, rdb, "svc", 1)[0]; r.Status != StatusRejected || !strings.Contains(r.Reason, "replay") {
		t.Fatalf("replayed after a redis-server restart: %s %q, want rejected as a replay", r.Status, r.Reason)
	}

	// A process of the same instance started now never saw the op: it is
	// stale for it.
	fresh := newTarget("svc", "i-1")
	startDaemon(t, rdb, fresh, WithKey(testKey))
	srv.Restart()
	replay(t, rdb, "svc", captured)
	rs := waitResults(t, rdb, "svc", 2)
	for _, r := range rs {
		if r.Status != StatusRejected {
			t.Errorf("replay to %s (pid %d): %s %q, want rejected", r.Instance, r.PID, r.Status, r.Reason)
		}
	}
	if calls := append(target.Calls(), fresh.Calls()...); len(calls) != 1 {
		t.Fatalf("executed %v, want the op once", calls)
	}
	staleSeen := false
	for _, r := range rs {
		staleSeen = staleSeen || strings.Contains(r.Reason, "stale")
	}
	if !staleSeen {
		t.Fatalf("results %+v: the new process should reject the op as stale", rs)
	}
}

func TestReplayMemoryStaysBoundedUnder100000DistinctOps(t *testing.T) {
	clock := clockwork.NewFakeClock()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	const limit = 5000
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never used: admit needs no Redis
	t.Cleanup(func() { _ = rdb.Close() })
	d, err := New(rdb, newTarget("svc", "i-1"), WithKey(testKey), WithClock(clock), WithLogger(quiet),
		WithReplayMemory(limit), WithMeterProvider(mp))
	if err != nil {
		t.Fatal(err)
	}
	// One op per millisecond, each valid for 2s + 5s skew: 7000 would be in
	// their window at once, more than the memory holds.
	const n = 100000
	accepted, full, most := 0, 0, 0
	var firstAccepted Op
	for i := range n {
		now := clock.Now()
		op := Sign(testKey, "svc", Op{ID: fmt.Sprintf("op-%d", i), Name: OpPull, Target: "*",
			IssuedAt: now.Truncate(time.Millisecond), TTL: 2 * time.Second, Nonce: fmt.Sprintf("nonce-%08d", i),
			StreamID: fmt.Sprintf("%d-0", i+1)})
		_, err := d.admit(op, now)
		switch {
		case err == nil:
			if accepted == 0 {
				firstAccepted = op
			}
			accepted++
		case errors.Is(err, ErrReplayMemoryFull):
			full++
		default:
			t.Fatalf("op %d: %v", i, err)
		}
		held := d.mem.len(now)
		most = max(most, held)
		if held > limit {
			t.Fatalf("after op %d the memory holds %d nonces, above its bound %d", i, held, limit)
		}
		clock.Advance(time.Millisecond)
	}
	t.Logf("%d ops: %d accepted, %d refused as the memory was full, at most %d nonces held", n, accepted, full, most)
	if most != limit || full == 0 {
		t.Errorf("the memory never filled (at most %d held, %d refused)", most, full)
	}
	// Expiry made room again and again: far more ops were accepted than the
	// memory holds.
	if accepted <= 5*limit {
		t.Errorf("%d ops accepted: expired nonces are not evicted", accepted)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, rm, MetricReplayMemoryFull); got != int64(full) {
		t.Errorf("%s = %d, want %d", MetricReplayMemoryFull, got, full)
	}
	// A nonce in its window is remembered: the first accepted op, replayed
	// while still fresh in a memory just as full, is refused for what it is.
	d2, err := New(rdb, newTarget("svc", "i-1"), WithKey(testKey), WithClock(clock), WithLogger(quiet), WithReplayMemory(2))
	if err != nil {
		t.Fatal(err)
	}
	firstAccepted.IssuedAt = clock.Now().Truncate(time.Millisecond)
	firstAccepted = Sign(testKey, "svc", firstAccepted)
	if _, err := d2.admit(firstAccepted, clock.Now()); err != nil {
		t.Fatal(err)
	}
	firstAccepted.StreamID = "999999-0"
	if _, err := d2.admit(firstAccepted, clock.Now()); !errors.Is(err, ErrReplayed) {
		t.Errorf("replay of a remembered nonce: %v, want ErrReplayed", err)
	}
	clock.Advance(8 * time.Second)
	if held := d.mem.len(clock.Now()); held != 0 {
		t.Fatalf("%d nonces held after every window closed, want 0", held)
	}
}

func counterValue(t *testing.T, rm metricdata.ResourceMetrics, name string) int64 {
	t.Helper()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				var sum int64
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					sum += dp.Value
				}
				return sum
			}
		}
	}
	return 0
}

func TestRestartHandOverKeepsOpsSentMeanwhileAndRefusesWhatTheOldProcessHandled(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	clock := clockwork.NewFakeClockAt(time.Now().Truncate(time.Millisecond))
	t0 := clock.Now()
	opts := []Option{WithKey(testKey), WithClock(clock), WithBlock(50 * time.Millisecond)}
	oldProc := newTarget("svc", "i-1")
	// The old process started a minute ago.
	old := startDaemon(t, rdb, oldProc, append(opts, WithNotBefore(t0.Add(-time.Minute)))...)

	signed := func(name, nonce string, at time.Time) map[string]any {
		o := newOp(name, "*", nonce, at)
		o.TTL = MaxTTL
		return Sign(testKey, "svc", o).Values()
	}
	early := signed(OpPull, "nonce-early01", t0.Add(-50*time.Second))
	around := signed(OpPull, "nonce-around1", t0.Add(-2*time.Second))
	restart := signed(OpRestart, "nonce-restart", t0)
	for _, v := range []map[string]any{early, around, restart} {
		xadd(t, rdb, "svc", v)
	}
	rs := waitResults(t, rdb, "svc", 3)
	if rs[0].Status != StatusDone || rs[1].Status != StatusDone || rs[2].Status != StatusAccepted {
		t.Fatalf("old process results %+v, want done, done, accepted", rs)
	}
	// Sent while the instance restarts: the old process reads no further.
	meanwhile := signed(OpPull, "nonce-meanwhl", t0.Add(time.Second))
	xadd(t, rdb, "svc", meanwhile)
	if err := old.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := old.HandOver()
	if !h.NotBefore.Equal(t0) {
		t.Errorf("hand-over not-before %v, want the restart's issued_at %v", h.NotBefore, t0)
	}
	var handed []string
	for _, n := range h.Nonces {
		handed = append(handed, n.Nonce)
	}
	if strings.Join(handed, ",") != "nonce-restart,nonce-around1" {
		t.Errorf("handed nonces %v, want the restart's and the op issued around it", handed)
	}

	// The next process starts 20s later, on the environment's word only.
	clock.Advance(20 * time.Second)
	back, err := ParseNonces(FormatNonces(h.Nonces))
	if err != nil {
		t.Fatal(err)
	}
	newProc := newTarget("svc", "i-1")
	d := startDaemon(t, rdb, newProc, append(opts, WithHandOver(HandOver{NotBefore: h.NotBefore, Nonces: back}))...)
	d.Running()
	byOp := map[string]Result{}
	for _, r := range waitResults(t, rdb, "svc", 5)[3:] {
		byOp[r.OpID] = r
	}
	if r := byOp["op-nonce-meanwhl"]; r.Status != StatusDone {
		t.Errorf("op sent during the restart: %+v, want done by the new process", r)
	}
	if r := byOp["op-nonce-restart"]; r.Status != StatusDone || r.KeyID != KeyID(testKey) {
		t.Errorf("the restart: %+v, want done by the new process, naming the key", r)
	}
	// Someone with write access wipes Redis and replays everything.
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	for _, v := range []map[string]any{early, around, restart, meanwhile} {
		replay(t, rdb, "svc", v)
	}
	rs = waitResults(t, rdb, "svc", 4)
	for i, want := range []string{"stale", "replay", "replay", "replay"} {
		if rs[i].Status != StatusRejected || !strings.Contains(rs[i].Reason, want) {
			t.Errorf("replay %d (%s): %s %q, want rejected (%s)", i, rs[i].OpID, rs[i].Status, rs[i].Reason, want)
		}
	}
	if calls := newProc.Calls(); len(calls) != 1 {
		t.Fatalf("the new process executed %v, want only the op sent during the restart", calls)
	}
}

func TestHandOverOfManyNoncesMovesNotBeforeSoNothingHandledIsAccepted(t *testing.T) {
	clock := clockwork.NewFakeClock()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never used
	t.Cleanup(func() { _ = rdb.Close() })
	opts := []Option{WithKey(testKey), WithClock(clock), WithLogger(quiet)}
	old, err := New(rdb, newTarget("svc", "i-1"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	var ops []Op
	for i := range MaxHandedNonces + 100 {
		now := clock.Now()
		op := Sign(testKey, "svc", Op{ID: fmt.Sprintf("op-%d", i), Name: OpPull, Target: "*", IssuedAt: now,
			TTL: MaxTTL, Nonce: fmt.Sprintf("nonce-%08d", i), StreamID: fmt.Sprintf("%d-0", i+1)})
		if _, err := old.admit(op, now); err != nil {
			t.Fatal(err)
		}
		ops = append(ops, op)
		clock.Advance(10 * time.Millisecond)
	}
	h := old.HandOver()
	if len(h.Nonces) != MaxHandedNonces {
		t.Fatalf("%d nonces handed over, want the bound %d", len(h.Nonces), MaxHandedNonces)
	}
	next, err := New(rdb, newTarget("svc", "i-1"), append(opts, WithHandOver(h))...)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		op.StreamID = "999999-0"
		if _, err := next.admit(op, clock.Now()); !errors.Is(err, ErrStale) && !errors.Is(err, ErrReplayed) {
			t.Fatalf("%s handled by the old process: %v, want stale or replayed", op.ID, err)
		}
	}
	late := Sign(testKey, "svc", Op{ID: "op-late", Name: OpPull, Target: "*", IssuedAt: clock.Now(), TTL: MaxTTL, Nonce: "nonce-late0001"})
	if _, err := next.admit(late, clock.Now()); err != nil {
		t.Fatalf("an op issued after the hand-over: %v, want accepted", err)
	}
}

func TestParseKeysNamesTheBadKeyWithoutShowingIt(t *testing.T) {
	keys, err := ParseKeys(string(newKey) + "," + string(oldKey))
	if err != nil || len(keys) != 2 || string(keys[0]) != string(newKey) || string(keys[1]) != string(oldKey) {
		t.Fatalf("ParseKeys(new,old) = %q, %v", keys, err)
	}
	for _, s := range []string{"short-secret", string(newKey) + ",short-secret", string(newKey) + ",", ","} {
		_, err := ParseKeys(s)
		if !errors.Is(err, ErrKey) || strings.Contains(err.Error(), "short-secret") || strings.Contains(err.Error(), string(newKey)) {
			t.Errorf("ParseKeys(%q) = %v, want ErrKey without the key", s, err)
		}
	}
	if _, err := ParseKeys(string(newKey) + ",short-secret"); err == nil || !strings.Contains(err.Error(), "key 2 of 2") {
		t.Errorf("error %v does not name the second key", err)
	}
	// sha256("0123456789abcdef0123456789abcdef") begins with these 8 digits.
	if id := KeyID(testKey); id != "3eb1bd43" || strings.Contains(string(testKey), id) {
		t.Errorf("KeyID = %q", id)
	}
}

func TestHandedNoncesRoundTripAndBadFormsAreRefused(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_000)
	ns := []HandedNonce{{Nonce: "nonce-0001", Issued: at, Expires: at.Add(time.Minute)}, {Nonce: "nonce_0002", Issued: at, Expires: at.Add(time.Second)}}
	back, err := ParseNonces(FormatNonces(ns))
	if err != nil || len(back) != 2 || back[0].Nonce != "nonce-0001" || !back[1].Expires.Equal(ns[1].Expires) || !back[0].Issued.Equal(at) {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	for _, bad := range []string{"nonce-0001", "short:1:2", "nonce-0001:x:2", "nonce-0001:1:-2", "nonce 0001:1:2",
		strings.Repeat("nonce-0001:1:2,", MaxHandedNonces) + "nonce-0001:1:2"} {
		if _, err := ParseNonces(bad); err == nil {
			t.Errorf("ParseNonces(%.40q) accepted", bad)
		}
	}
}

// A rejected signature names the key the entry was signed with and the keys
// the instance accepts, so that an operator sees which side holds the wrong
// SG_CONTROL_KEY; an entry without a key id (an older sender) says so.
func TestABadSignatureNamesTheSignersKeyIDAndTheAcceptedOnes(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	startDaemon(t, rdb, newTarget("svc", "i-1"), WithKeys(newKey, oldKey), WithBlock(50*time.Millisecond))

	if _, err := NewClient(rdb, thirdKey).Send(context.Background(), "svc", OpPull, "*", nil); err != nil {
		t.Fatal(err)
	}
	anonymous := Sign(thirdKey, "svc", newOp(OpPull, "*", "nonce-anon0001", time.Now()))
	anonymous.KeyID = ""
	xadd(t, rdb, "svc", anonymous.Values())
	rs := waitResults(t, rdb, "svc", 2)
	for i, want := range []string{
		"bad signature: signed with key " + KeyID(thirdKey) + "; this instance accepts key ids " + KeyID(newKey) + ", " + KeyID(oldKey),
		"bad signature: signed with a key the entry does not name; this instance accepts key ids " + KeyID(newKey) + ", " + KeyID(oldKey),
	} {
		if rs[i].Status != StatusRejected || !strings.Contains(rs[i].Reason, want) {
			t.Errorf("result %d: %s %q, want rejected containing %q", i, rs[i].Status, rs[i].Reason, want)
		}
	}
}
