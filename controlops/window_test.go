package controlops

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/internal/redistest"
)

// The replay window the package documentation states ("Replay protection"):
// after Redis lost the nonce claims, a process of the instance that was not
// exec'd by the one that ran an op (a supervisor restart, a crash) runs a
// replay of it again only if it started no later than the op's issued_at +
// skew. These processes are started with WithNotBefore at the time the
// lifecycle would give them, their start.
func TestAfterFlushallAReplayToASupervisorRestartedProcessRunsOnlyWithinTheSkewOfItsIssue(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	ctx := context.Background()
	issued := time.Now().Truncate(time.Millisecond)
	op := newOp(OpPull, "*", "nonce-window1", issued)
	op.TTL = time.Minute
	captured := Sign(testKey, "svc", op).Values()

	first := newTarget("svc", "i-1")
	d := startDaemon(t, rdb, first, WithKey(testKey), WithBlock(50*time.Millisecond), WithNotBefore(issued.Add(-time.Minute)))
	xadd(t, rdb, "svc", captured)
	if r := waitResults(t, rdb, "svc", 1)[0]; r.Status != StatusDone {
		t.Fatalf("the original op: %s %q, want done", r.Status, r.Reason)
	}
	if err := d.Stop(ctx); err != nil { // the process exits; its memory is gone
		t.Fatal(err)
	}

	// started is the next process's start, relative to the op's issue.
	run := func(started time.Duration) Result {
		t.Helper()
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		next := newTarget("svc", "i-1")
		d := startDaemon(t, rdb, next, WithKey(testKey), WithBlock(50*time.Millisecond), WithNotBefore(issued.Add(started)))
		xadd(t, rdb, "svc", captured)
		r := waitResults(t, rdb, "svc", 1)[0]
		if err := d.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if r.Status == StatusDone && len(next.Calls()) != 1 {
			t.Fatalf("done but executed %v", next.Calls())
		}
		return r
	}
	if r := run(DefaultMaxSkew + time.Millisecond); r.Status != StatusRejected || !strings.Contains(r.Reason, "stale") {
		t.Errorf("replayed to a process started skew+1ms after the op's issue: %s %q, want rejected as stale", r.Status, r.Reason)
	}
	if r := run(time.Minute); r.Status != StatusRejected || !strings.Contains(r.Reason, "stale") {
		t.Errorf("replayed to a process started a minute after the op's issue: %s %q, want rejected as stale", r.Status, r.Reason)
	}
	// The stated window: Redis lost the claim, the process was not exec'd
	// by the one that ran the op, and it started within the skew of the
	// op's issue. The op runs again; this pins the documented bound.
	if r := run(DefaultMaxSkew); r.Status != StatusDone {
		t.Errorf("replayed to a process started exactly skew after the op's issue: %s %q; the documented window says it runs: update the docs with the code", r.Status, r.Reason)
	}
}
