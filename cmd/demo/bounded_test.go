package main

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// hugeField is the size of the field the memory tests write: what a Redis
// writer without the key can append to any stream.
const hugeField = 100 << 20

// peakBound is how much a component's peak resident memory may grow above
// its idle resident memory while it reads past entries of hugeField bytes.
const peakBound = 64 << 20

// Whoever can write sg:control:{demo} can append an op of any size, signed
// or not. The daemon must not load it: it answers it rejected, naming its
// size and the limit, and goes on with the next op.
func TestAHundredMegabyteOpIsRejectedWithoutRaisingTheDemosPeakMemoryBy64MiB(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	p := startService(t, srv, "demo-1", "SG_CONTROL_KEY="+newKey, "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none")
	runningEntry(t, p, registry.New(rdb), "demo-1")
	if r := send(t, rdb, newOp(controlops.OpPull, newKey, time.Now()), "demo-1"); r.Status != controlops.StatusDone {
		t.Fatalf("the first pull: %+v", r)
	}
	idle := p.Memory(t)
	p.ResetPeak(t)

	// Two oversized ops back to back: the first reaches a daemon blocked in
	// XREAD, the second may come while it handles the first.
	payload := strings.Repeat("x", hugeField)
	var huge []controlops.Op
	var sizes []int
	for range 2 {
		op := newOp(controlops.OpPull, newKey, time.Now())
		values := op.Values()
		values[controlops.FieldArgs] = payload
		size := 0
		for k, v := range values {
			size += len(k) + len(v.(string))
		}
		id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: controlops.StreamKey("demo"), Values: values}).Result()
		if err != nil {
			t.Fatal(err)
		}
		op.StreamID = id
		huge, sizes = append(huge, op), append(sizes, size)
	}
	next := send(t, rdb, newOp(controlops.OpPull, newKey, time.Now()), "demo-1")
	mem := p.Memory(t)
	t.Logf("demo: idle %s, peak %s while it read past two ops of %s (bound: idle + %s)",
		proctest.MiB(idle.RSS), proctest.MiB(mem.Peak), proctest.MiB(hugeField), proctest.MiB(peakBound))
	if mem.Peak > idle.RSS+peakBound {
		t.Errorf("peak resident memory %s, idle %s: the oversized ops were loaded", proctest.MiB(mem.Peak), proctest.MiB(idle.RSS))
	}
	if next.Status != controlops.StatusDone {
		t.Errorf("the pull after them: %+v, want done", next)
	}
	for i, op := range huge {
		r := resultOfEntry(t, rdb, op.StreamID)
		// The guard refused it within its args: the reason names that field's
		// size (the entry's, sizes[i], is larger still) and the limit.
		if r.Status != controlops.StatusRejected || r.Entry != op.StreamID || !strings.Contains(r.Reason, strconv.Itoa(hugeField)+" bytes") ||
			!strings.Contains(r.Reason, strconv.Itoa(controlops.MaxEntryLen)) {
			t.Errorf("the result of oversized op %d (%d bytes): %+v, want rejected naming the size of its args %d and the limit %d", i, sizes[i], r, hugeField, controlops.MaxEntryLen)
		}
	}
}

// resultOfEntry returns the demo's result for the entry id of its stream: an
// op refused unread has no op id in it, only its entry's.
func resultOfEntry(t *testing.T, rdb redis.UniversalClient, id string) controlops.Result {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msgs, err := rdb.XRange(context.Background(), controlops.ResultsKey("demo"), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if m.Values[controlops.ResultStreamID] == id {
				status, _ := m.Values[controlops.ResultStatus].(string)
				reason, _ := m.Values[controlops.ResultReason].(string)
				return controlops.Result{ID: m.ID, Entry: id, Status: controlops.Status(status), Reason: reason}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no result for entry %s", id)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}
