package controlops

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// The canonical form of a result is fixed: a sender in another language
// (the Python package) checks results against these bytes and this
// signature.
func TestAResultIsSignedOverAFixedCanonicalForm(t *testing.T) {
	r := Result{OpID: "0123456789abcdef01234567", Op: OpRestart, Entry: "1700000000000-0", Instance: "demo-1",
		Status: StatusDone, At: time.UnixMilli(1_700_000_000_123), State: "running", PID: 4242,
		TraceID: "0af7651916cd43dd8448eb211c80319c"}
	s := SignResult(testKey, "demo", r)
	want := "20:sg-control-result-v1\n4:demo\n24:0123456789abcdef01234567\n7:restart\n15:1700000000000-0\n6:demo-1\n4:done\n0:\n" +
		"13:1700000000123\n7:running\n4:4242\n32:0af7651916cd43dd8448eb211c80319c\n8:" + KeyID(testKey) + "\n"
	if got := string(s.Canonical("demo")); got != want {
		t.Errorf("canonical form:\n%q\nwant\n%q", got, want)
	}
	if s.KeyID != KeyID(testKey) || len(s.Sig) != 64 {
		t.Fatalf("SignResult set key_id %q and sig %q", s.KeyID, s.Sig)
	}
	if err := VerifyResult([][]byte{testKey}, "demo", s); err != nil {
		t.Errorf("VerifyResult of a signed result: %v", err)
	}
	if err := VerifyResult([][]byte{[]byte("another-key-of-at-least-16")}, "demo", s); !errors.Is(err, ErrBadSignature) {
		t.Errorf("VerifyResult under another key = %v, want ErrBadSignature", err)
	}
	if err := VerifyResult([][]byte{testKey}, "other", s); !errors.Is(err, ErrBadSignature) {
		t.Errorf("VerifyResult for another service = %v, want ErrBadSignature", err)
	}
	if err := VerifyResult([][]byte{testKey}, "demo", r); !errors.Is(err, ErrUnsigned) {
		t.Errorf("VerifyResult of an unsigned result = %v, want ErrUnsigned", err)
	}
	// An op's signature never passes for a result's, nor the reverse: the
	// two forms open with different versions.
	if string(s.Canonical("demo")[:24]) == string(Op{}.Canonical("demo")[:24]) {
		t.Errorf("results and ops share a canonical prefix")
	}
}

// Every field of a signed result is covered: one changed in Redis, even to
// a form that parses alike, no longer verifies.
func TestAResultChangedInRedisNoLongerVerifies(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	c := NewClient(rdb, testKey)
	signed := SignResult(testKey, "demo", Result{OpID: "op-1", Op: OpPull, Entry: "1-0", Instance: "demo-1",
		Status: StatusDone, At: time.UnixMilli(1_700_000_000_000), State: "running", PID: 7})
	for _, tc := range []struct {
		name   string
		change func(v map[string]any)
		want   bool
	}{
		{"untouched", func(map[string]any) {}, true},
		{"status", func(v map[string]any) { v[ResultStatus] = string(StatusFailed) }, false},
		{"instance", func(v map[string]any) { v[ResultInstance] = "demo-2" }, false},
		{"op_id", func(v map[string]any) { v[ResultOpID] = "op-2" }, false},
		{"pid written otherwise", func(v map[string]any) { v[ResultPID] = "+07" }, false},
		{"at written otherwise", func(v map[string]any) { v[ResultAt] = "0" + strconv.FormatInt(1_700_000_000_000, 10) }, false},
		{"sig of another result", func(v map[string]any) {
			v[ResultSig] = SignResult(testKey, "demo", Result{OpID: "op-other", Status: StatusDone}).Sig
		}, false},
		{"no sig", func(v map[string]any) { delete(v, ResultSig) }, false},
	} {
		v := signed.values()
		tc.change(v)
		if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: ResultsKey("demo"), Values: v}).Err(); err != nil {
			t.Fatal(err)
		}
		rs, err := c.Results(context.Background(), "demo", "0", 1000, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := rs[len(rs)-1].Verified; got != tc.want {
			t.Errorf("%s: Verified = %v, want %v", tc.name, got, tc.want)
		}
	}
	// A client without a key verifies nothing.
	rs, err := NewClient(rdb, nil).Results(context.Background(), "demo", "0", 1, 0)
	if err != nil || len(rs) != 1 || rs[0].Verified {
		t.Errorf("a keyless client: %+v %v, want the result unverified", rs, err)
	}
}

// A daemon signs each result of an op that a key verified, with that key
// (the op's sender can verify it, during a key rotation too); results of
// ops no key verified are unsigned.
func TestADaemonSignsTheResultsOfVerifiedOpsWithTheKeyThatVerifiedThem(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	newKey, oldKey := []byte("new-key-0123456789abcdef"), []byte("old-key-0123456789abcdef")
	startDaemon(t, rdb, newTarget("svc", "i-1"), WithKeys(newKey, oldKey), WithBlock(50*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, key := range [][]byte{newKey, oldKey, []byte("a-key-it-does-not-hold")} {
		c := NewClient(rdb, key)
		op, err := c.Send(ctx, "svc", OpPull, "i-1", nil)
		if err != nil {
			t.Fatal(err)
		}
		final, err := c.Wait(ctx, "svc", op, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := final["i-1"]
		switch string(key) {
		case string(newKey), string(oldKey):
			if r.Status != StatusDone || !r.Verified || r.KeyID != KeyID(key) {
				t.Errorf("op signed with %s: %s, verified %v, key %s; want done, signed with the sender's key", KeyID(key), r.Status, r.Verified, r.KeyID)
			}
		default:
			if r.Status != StatusRejected || r.Sig != "" || r.Verified {
				t.Errorf("op signed with an unknown key: %s, sig %q; want an unsigned rejection", r.Status, r.Sig)
			}
		}
	}
}

// A client with a key waits for the instance's own done: one that someone
// wrote to Redis first, unsigned or signed otherwise, is reported to fn
// and does not end the wait.
func TestWaitWithAKeyDoesNotTakeAForgedDoneForTheInstancesOwn(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	target := newTarget("svc", "i-1")
	release := make(chan struct{})
	target.onDo = func(string) { <-release } // the pull runs until the forgeries are in
	startDaemon(t, rdb, target, WithKey(testKey), WithBlock(50*time.Millisecond))
	c := NewClient(rdb, testKey)
	op, err := c.Send(context.Background(), "svc", OpPull, "i-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	forged := Result{OpID: op.ID, Op: op.Name, Entry: op.StreamID, Instance: "i-1", Status: StatusDone, At: time.Now(), State: "running", PID: 1}
	other := SignResult([]byte("the-forgers-own-key-0123"), "svc", forged)
	for _, v := range []map[string]any{forged.values(), other.values()} {
		if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: ResultsKey("svc"), Values: v}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var seen []Result
	forgeriesSeen := make(chan struct{})
	done := make(chan struct{})
	var final map[string]Result
	go func() {
		defer close(done)
		final, err = c.Wait(ctx, "svc", op, nil, func(r Result) {
			seen = append(seen, r)
			if len(seen) == 2 {
				close(forgeriesSeen)
			}
		})
	}()
	// The daemon's done comes only after Wait has read both forgeries: had
	// it taken one for final, it would be what Wait returns.
	select {
	case <-forgeriesSeen:
	case <-done:
	}
	close(release)
	<-done
	if err != nil || final["i-1"].Status != StatusDone || !final["i-1"].Verified || final["i-1"].PID == 1 {
		t.Fatalf("Wait = %+v %v, want the daemon's signed done", final, err)
	}
	if len(seen) != 3 || seen[0].Verified || seen[1].Verified || !seen[2].Verified {
		t.Errorf("fn saw %+v, want the two forgeries unverified, then the daemon's done", seen)
	}
}

// A client with a key that waits on an instance in insecure mode (it holds
// no key, so its done is unsigned) ends at its deadline saying why, not
// with a bare deadline.
func TestWaitOnAnInsecureInstanceEndsSayingItsDoneWasNotSigned(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	startDaemon(t, rdb, newTarget("svc", "i-1"), WithInsecure(), WithBlock(50*time.Millisecond))
	c := NewClient(rdb, testKey)
	op, err := c.Send(context.Background(), "svc", OpPull, "i-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	var dones atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The wait ends once the instance's done has been read and set aside.
	_, err = c.Wait(ctx, "svc", op, nil, func(r Result) {
		if r.Status == StatusDone {
			dones.Add(1)
			cancel()
		}
	})
	if dones.Load() != 1 || !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v after %d dones, want the instance's one done, then the cancel", err, dones.Load())
	}
	if !strings.Contains(err.Error(), "not signed with the client's key came from i-1") || !strings.Contains(err.Error(), "insecure mode") {
		t.Errorf("Wait's error %q does not say the done from i-1 was unsigned", err)
	}
}
