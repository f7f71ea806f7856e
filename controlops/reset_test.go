package controlops

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
)

// After Redis lost the stream, the first op of the new one may get the id
// of the last op the daemon handled (the same millisecond; a suite run
// beside CPU hogs hit it) or a lower one (a server whose clock is behind).
// An XREAD after that id never returns it: before, such an op was never
// answered. Each case gets a result within one block time (1s here).
func TestAnOpInAStreamRedisLostAndStartedAgainIsAnsweredWhateverItsId(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   func(last string) string
	}{
		{"the id of the last op handled", func(last string) string { return last }},
		{"an id below it", func(string) string { return "1-1" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Server(t)
			rdb := srv.Client(t)
			log := &logBuffer{}
			target := newTarget("svc", "i-1")
			startDaemon(t, rdb, target, WithInsecure(), WithLogger(slogTo(log)), WithBlock(time.Second))
			last := xadd(t, rdb, "svc", newOp(OpPull, TargetAll, "nonce-first", time.Now()).Values())
			if r := waitResults(t, rdb, "svc", 1)[0]; r.Status != StatusDone {
				t.Fatalf("the first op: %s %q, want done", r.Status, r.Reason)
			}

			if err := rdb.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			began := time.Now()
			id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: StreamKey("svc"), ID: tc.id(last),
				Values: newOp(OpPull, TargetAll, "nonce-second", time.Now()).Values()}).Result()
			if err != nil {
				t.Fatal(err)
			}
			r := waitResults(t, rdb, "svc", 1)[0]
			el := time.Since(began)
			t.Logf("the op at %s (last handled: %s) answered %s in %v", id, last, r.Status, el)
			if r.Status != StatusDone || r.OpID != "op-nonce-second" {
				t.Fatalf("the op after the reset: %s %s %q, want op-nonce-second done", r.OpID, r.Status, r.Reason)
			}
			if el > 3*time.Second {
				t.Errorf("answered after %v, want within one block (1s) and a margin", el)
			}
			if calls := target.Calls(); len(calls) != 2 {
				t.Errorf("ran %v, want the two pulls once each", calls)
			}
			if !strings.Contains(log.String(), "control stream was reset") {
				t.Errorf("no warning of the reset in the log:\n%s", log)
			}
		})
	}
}
