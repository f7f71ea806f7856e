package controlops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/stargazer/lifecycle/internal/redistest"
)

// allocated returns the bytes the test process has allocated so far, every
// goroutine included (runtime.MemStats.TotalAlloc): reading an entry of N
// bytes allocates at least N.
func allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// blockedClients returns how many clients Redis has blocked in a command.
func blockedClients(t *testing.T, rdb redis.UniversalClient) int {
	t.Helper()
	info := rdb.Info(context.Background(), "clients").Val()
	_, rest, ok := strings.Cut(info, "blocked_clients:")
	if !ok {
		t.Fatalf("INFO clients without blocked_clients: %s", info)
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(rest, "\n", 2)[0]))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// hugeOp is an op whose args field is n bytes, and the size of its entry.
func hugeOp(nonce string, n int) (map[string]any, int) {
	v := newOp(OpPull, "*", nonce, time.Now()).Values()
	v[FieldArgs] = strings.Repeat("x", n)
	size := 0
	for k, x := range v {
		size += len(k) + len(x.(string))
	}
	return v, size
}

func TestADaemonRejectsAnOversizedOpUnreadNamingItsSizeAndTheLimitAndHandlesTheNext(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	var logs logBuffer
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	target := newTarget("svc", "i-1")
	startDaemon(t, rdb, target, WithKey(testKey), WithLogger(slogTo(&logs)), WithMeterProvider(mp), WithBlock(time.Minute))
	big1, size1 := hugeOp("nonce-big0001", 32<<20)
	big2, size2 := hugeOp("nonce-big0002", MaxEntryLen) // the other fields take it over
	// The first reaches a daemon blocked in XREAD.
	deadline := time.Now().Add(5 * time.Second)
	for blockedClients(t, rdb) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the daemon never blocked in XREAD")
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
	before := allocated()
	id1 := xadd(t, rdb, "svc", big1)
	id2 := xadd(t, rdb, "svc", big2)
	next := Sign(testKey, "svc", newOp(OpPull, "*", "nonce-next001", time.Now()))
	xadd(t, rdb, "svc", next.Values())
	rs := waitResults(t, rdb, "svc", 3)
	alloc := allocated() - before
	t.Logf("a %d-byte op, a %d-byte op and a small one handled: %d bytes allocated, the XADDs' included; reasons %q, %q", size1, size2, alloc, rs[0].Reason, rs[1].Reason)
	if alloc > 8<<20 {
		t.Errorf("%d bytes allocated: the oversized op was loaded", alloc)
	}
	// The first was refused by the guard, within its field: its size is the
	// field's, and nothing else of it was read. The second, just over the
	// limit in all, passed the guard: its size is exact, its op known.
	for i, want := range []struct {
		entry, opID, size string
	}{{id1, "", "a field of " + strconv.Itoa(32<<20) + " bytes"}, {id2, "op-nonce-big0002", fmt.Sprintf("%d bytes in %d fields", size2, len(big2))}} {
		r := rs[i]
		if r.Status != StatusRejected || r.Entry != want.entry || r.OpID != want.opID ||
			!strings.Contains(r.Reason, want.size) || !strings.Contains(r.Reason, strconv.Itoa(MaxEntryLen)+" bytes") {
			t.Errorf("result %d: %+v; want entry %s rejected, op id %q, naming %q and the limit %d", i, r, want.entry, want.opID, want.size, MaxEntryLen)
		}
	}
	if rs[2].Status != StatusDone || rs[2].OpID != next.ID {
		t.Errorf("the op after them: %+v, want done", rs[2])
	}
	if got := target.Calls(); len(got) != 1 {
		t.Errorf("the target ran %v, want the one small pull", got)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, rm, MetricOversized); got != 2 {
		t.Errorf("%s = %d, want 2", MetricOversized, got)
	}
	// One warning a minute: the first written, the second counted.
	if n := strings.Count(logs.String(), "oversized control entry rejected unread"); n != 1 {
		t.Errorf("%d warnings, want 1:\n%s", n, logs.String())
	}
}

// The start position is the stream's last id, read without the entry.
func TestADaemonStartsAfterAnOversizedLastEntryWithoutLoadingIt(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	big, _ := hugeOp("nonce-big0001", 32<<20)
	id := xadd(t, rdb, "svc", big)
	before := allocated()
	d := startDaemon(t, rdb, newTarget("svc", "i-1"), WithInsecure())
	if got := d.LastID(); got != id {
		t.Fatalf("start position %q, want the oversized entry's id %s", got, id)
	}
	if alloc := allocated() - before; alloc > 4<<20 {
		t.Fatalf("Start allocated %d bytes", alloc)
	}
}

// A restart hand-over bloated by a Redis writer is ignored, not loaded.
func TestADaemonIgnoresAHandOverTooLargeToBeOne(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	last := xadd(t, rdb, "svc", newOp("echo", "*", "nonce-old0001", time.Now()).Values())
	if err := rdb.HSet(context.Background(), PendingKey("svc", "i-1"), pendingEntry, "0-0", "junk", strings.Repeat("j", 4<<20)).Err(); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	before := allocated()
	d := startDaemon(t, rdb, newTarget("svc", "i-1"), WithInsecure(), WithLogger(slogTo(&logs)))
	if got := d.LastID(); got != last {
		t.Fatalf("start position %q, want the stream's end %s: the hand-over was used\n%s", got, last, logs.String())
	}
	if alloc := allocated() - before; alloc > 2<<20 {
		t.Fatalf("Start allocated %d bytes", alloc)
	}
	if !strings.Contains(logs.String(), "restart hand-over too large to be one") {
		t.Fatalf("no warning:\n%s", logs.String())
	}
}

// Writers refuse what readers would reject: an op beyond the limits is an
// error of Send naming the field and the limit, before anything is written.
func TestSendRefusesAnOpOverTheLimitsNamingTheFieldAndTheLimit(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	c := NewClient(rdb, testKey)
	_, err := c.Send(context.Background(), "svc", OpPull, "*", map[string]string{"x": strings.Repeat("a", MaxArgsLen)})
	if !errors.Is(err, ErrInvalidRequest) || !strings.Contains(err.Error(), `field "args"`) || !strings.Contains(err.Error(), strconv.Itoa(MaxArgsLen)) {
		t.Fatalf("Send with %d bytes of args: %v, want an error naming args and %d", MaxArgsLen+8, err, MaxArgsLen)
	}
	// Fields Parse knows nothing of count towards the entry's size.
	v := newOp(OpPull, "*", "nonce-unknown1", time.Now()).Values()
	v["junk"] = strings.Repeat("j", MaxEntryLen)
	_, err = Parse(v)
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), `field "junk"`) || !strings.Contains(err.Error(), strconv.Itoa(MaxEntryLen)) {
		t.Fatalf("Parse of an entry with a %d-byte unknown field: %v", MaxEntryLen, err)
	}
	if n := rdb.XLen(context.Background(), StreamKey("svc")).Val(); n != 0 {
		t.Fatalf("%d entries written", n)
	}
}

// A result's reason is cut so that the entry stays within MaxResultLen.
func TestAResultsReasonIsCutToMaxReasonLen(t *testing.T) {
	long := strings.Repeat("é", MaxReasonLen) // two bytes each
	got := cutReason(long)
	if len(got) > MaxReasonLen || !strings.HasSuffix(got, "…") || !strings.HasPrefix(long, strings.TrimSuffix(got, "…")) {
		t.Fatalf("cut to %d bytes, suffix %q", len(got), got[len(got)-8:])
	}
	r := Result{OpID: strings.Repeat("i", MaxIDLen), Op: strings.Repeat("o", MaxOpLen), Entry: "18446744073709551615-18446744073709551615",
		Instance: strings.Repeat("n", 128), Status: StatusRejected, Reason: long, At: time.Now(), State: "stopping_daemons",
		PID: 1 << 30, TraceID: strings.Repeat("t", 32), KeyID: "12345678"}
	size := 0
	for k, v := range r.values() {
		size += len(k) + len(v.(string))
	}
	if size > MaxResultLen {
		t.Fatalf("the largest result a daemon writes is %d bytes, over MaxResultLen %d", size, MaxResultLen)
	}
}

// Whoever can write the results stream can append a result of any size, one
// that claims to be the op's too: Wait never loads it, and returns the real one.
func TestWaitLeavesOutAnOversizedResultWithoutLoadingIt(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	startDaemon(t, rdb, newTarget("svc", "i-1"), WithInsecure(), WithBlock(time.Minute))
	c := NewClient(rdb, nil)
	op, err := c.Send(context.Background(), "svc", "echo", "i-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	reason := strings.Repeat("r", 32<<20)
	before := allocated()
	if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: ResultsKey("svc"), Values: map[string]any{
		ResultOpID: op.ID, ResultInstance: "i-1", ResultStatus: string(StatusFailed), ResultReason: reason,
	}}).Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	final, err := c.Wait(ctx, "svc", op, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if alloc := allocated() - before; alloc > 8<<20 {
		t.Errorf("Wait allocated %d bytes: the oversized result was loaded", alloc)
	}
	if r := final["i-1"]; r.Status != StatusDone {
		t.Fatalf("final result %+v, want the daemon's done", r)
	}
	rs, err := c.Results(context.Background(), "svc", "0", 0, 0)
	if err != nil || len(rs) != 1 || rs[0].Status != StatusDone {
		t.Fatalf("Results without block: %+v %v, want the daemon's one", rs, err)
	}
}

// slogTo is a text logger writing to l.
func slogTo(l *logBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }
