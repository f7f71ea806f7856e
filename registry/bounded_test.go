package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// envWatcherChild names the service TestWatcherChildProcess watches, in the
// child process of TestAWatcherReadsPastHundredMegabyteEvents...; unset,
// the test does nothing.
const envWatcherChild = "REGISTRY_TEST_WATCHER_CHILD"

// TestWatcherChildProcess is the child: a Watcher of the service named by
// envWatcherChild on the Redis at REDIS_ADDR, printing each view's running
// instances ("view: a, b") until it is killed.
func TestWatcherChildProcess(t *testing.T) {
	svc := os.Getenv(envWatcherChild)
	if svc == "" {
		t.Skip("the child process of TestAWatcherReadsPastHundredMegabyteEvents: runs only there")
	}
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv("REDIS_ADDR")})
	defer rdb.Close()
	reg := registry.New(rdb, registry.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil))))
	w, err := reg.Watch(svc)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.WaitSynced(context.Background()); err != nil {
		t.Fatal(err)
	}
	for v := w.View(); ; {
		fmt.Printf("view: %s\n", join(ids(v.Running)))
		if v, err = w.Next(context.Background(), v); err != nil {
			t.Fatal(err)
		}
	}
}

// Every balancer client follows sg:events, which anyone who can write to
// Redis can append to. Its Watcher must not load an oversized event, of its
// service or another, nor the oversized entry a small event names: it skips
// them, warns, and sees the next change.
func TestAWatcherReadsPastHundredMegabyteEventsWithoutRaisingItsPeakMemoryBy64MiB(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 200 MB to a real redis-server")
	}
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	reg := registry.New(rdb, registry.WithLogger(slog.New(slog.DiscardHandler)))
	runningMember(t, reg, "svc", "a", "127.0.0.1:1")
	child := proctest.Start(t, proctest.Cmd{Bin: os.Args[0], Name: "watcher",
		Args: []string{"-test.run=^TestWatcherChildProcess$"}, Env: []string{envWatcherChild + "=svc", "REDIS_ADDR=" + srv.Addr()}})
	child.WaitFor(t, "view: a\n")
	idle := child.Memory(t)
	child.ResetPeak(t)

	const huge = 100 << 20
	payload := strings.Repeat("e", huge)
	for _, svc := range []string{"svc", "other"} {
		if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: registry.EventsKey, Values: []any{
			"service", svc, "instance", "huge", "event", "boom", "from", "starting", "to", "running",
			"time", time.Now().UTC().Format(time.RFC3339Nano), "error", payload,
		}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// An entry of 100 MB under the service's keys, indexed, and a small event
	// that says it is running: the Watcher reads entries such events name.
	if err := rdb.Set(context.Background(), registry.EntryKey("svc", "bloated"), payload, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(context.Background(), registry.IndexKey("svc"), redis.Z{Score: float64(time.Now().Add(time.Minute).UnixMilli()), Member: "bloated"}).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Publish(context.Background(), registry.Event{Service: "svc", Instance: "bloated", Event: "e", From: "starting", To: "running"}); err != nil {
		t.Fatal(err)
	}
	runningMember(t, reg, "svc", "b", "127.0.0.1:2")
	child.WaitFor(t, "view: a, b\n")
	mem := child.Memory(t)
	t.Logf("watcher: idle %s, peak %s while it read past two events and an entry of %s (bound: idle + %s)",
		proctest.MiB(idle.RSS), proctest.MiB(mem.Peak), proctest.MiB(huge), proctest.MiB(64<<20))
	if mem.Peak > idle.RSS+64<<20 {
		t.Errorf("peak resident memory %s, idle %s: the oversized events or entry were loaded", proctest.MiB(mem.Peak), proctest.MiB(idle.RSS))
	}
	// The warnings of the events are rate-limited: the first is written, the
	// second counted.
	for _, want := range []string{"oversized event skipped unread", "skipping an oversized entry unread"} {
		if !strings.Contains(child.Stderr(), want) {
			t.Errorf("the watcher did not warn %q:\n%s", want, child.Stderr())
		}
	}
}

// allocated returns the bytes the test process has allocated so far, every
// goroutine included (runtime.MemStats.TotalAlloc).
func allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// hugeEvent appends an event of service whose error field is n bytes.
func hugeEvent(t *testing.T, rdb redis.UniversalClient, service string, payload string) string {
	t.Helper()
	id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: registry.EventsKey, Values: []any{
		"service", service, "instance", "huge", "event", "boom", "from", "starting", "to", "running", "error", payload,
	}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestAnEventReaderLeavesOutOversizedEntriesUnreadAndSaysSo(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	reg := registry.New(rdb, registry.WithLogger(slog.New(slog.DiscardHandler)))
	start, err := reg.Publish(t.Context(), registry.Event{Service: "svc", Instance: "a", Event: "e", From: "x", To: "y"})
	if err != nil {
		t.Fatal(err)
	}
	payload := strings.Repeat("e", 32<<20)
	before := allocated()
	huge := hugeEvent(t, rdb, "svc", payload)
	small, err := reg.Publish(t.Context(), registry.Event{Service: "svc", Instance: "b", Event: "e", From: "x", To: "y"})
	if err != nil {
		t.Fatal(err)
	}
	er := reg.EventReader()
	defer er.Close()
	// A page ends with the entry the guard refused; the next read goes on.
	p, err := er.Read(t.Context(), start, 0, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Events) != 0 || len(p.Skipped) != 1 || p.Next != huge {
		t.Fatalf("page %+v: want the huge one skipped, next %s", p, huge)
	}
	if s := p.Skipped[0]; s.ID != huge || s.Bytes != 32<<20 || s.Why != "a field of 33554432 bytes" {
		t.Fatalf("skipped %+v", s)
	}
	p, err = er.Read(t.Context(), p.Next, 0, time.Second)
	if err != nil || len(p.Events) != 1 || p.Events[0].ID != small || p.Next != small {
		t.Fatalf("page %+v %v: want the small event", p, err)
	}
	if a := allocated() - before; a > 4<<20 {
		t.Errorf("%d bytes allocated: the oversized event was loaded", a)
	}
	// "$" is where the stream ends now; a blocked read then gets what comes next.
	done := make(chan registry.EventPage, 1)
	go func() {
		p, err := er.Read(context.Background(), "$", 0, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- p
	}()
	waitBlockedClients(t, rdb, 1)
	next, _ := reg.Publish(t.Context(), registry.Event{Service: "svc", Instance: "c", Event: "e", From: "x", To: "y"})
	if p := <-done; len(p.Events) != 1 || p.Events[0].ID != next {
		t.Fatalf("after $: %+v, want %s", p, next)
	}
	// Backwards, as the dashboard reads the latest: bounded too.
	before = allocated()
	r, err := reg.EventRange(t.Context(), "+", "-", 10, true)
	if err != nil || len(r.Events) != 3 || len(r.Skipped) != 1 || r.Events[0].ID != next {
		t.Fatalf("reverse range: %+v %v", r, err)
	}
	if a := allocated() - before; a > 1<<20 {
		t.Errorf("EventRange allocated %d bytes", a)
	}
}

func TestEventsLeavesOutOversizedEntriesWithOrWithoutBlockAndEndsABlockedReadWithItsContext(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	var logs strings.Builder
	reg := registry.New(rdb, registry.WithLogger(slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))))
	payload := strings.Repeat("e", 32<<20)
	before := allocated()
	hugeEvent(t, rdb, "svc", payload)
	small, _ := reg.Publish(t.Context(), registry.Event{Service: "svc", Instance: "b", Event: "e", From: "x", To: "y"})
	for _, block := range []time.Duration{0, time.Second} {
		var got []registry.Event
		for last := "0"; last != small; {
			evs, next, err := reg.Events(t.Context(), last, 0, block)
			if err != nil || next == last {
				t.Fatalf("block %v: after %s: %+v %q %v", block, last, evs, next, err)
			}
			got, last = append(got, evs...), next
		}
		if len(got) != 1 || got[0].ID != small {
			t.Fatalf("block %v: %+v, want the small event alone", block, got)
		}
	}
	if a := allocated() - before; a > 4<<20 {
		t.Errorf("%d bytes allocated: the oversized event was loaded", a)
	}
	if !strings.Contains(logs.String(), "registry: oversized event skipped unread") {
		t.Errorf("no warning:\n%s", logs.String())
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan time.Time, 1)
	go func() {
		_, _, _ = reg.Events(ctx, "$", 0, time.Hour)
		done <- time.Now()
	}()
	waitBlockedClients(t, rdb, 1)
	cancelled := time.Now()
	cancel()
	select {
	case at := <-done:
		t.Logf("a blocked Events returned %v after its context ended", at.Sub(cancelled))
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked Events did not return when its context ended")
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func waitBlockedClients(t *testing.T, rdb *redis.Client, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for blockedClients(t, rdb) != n {
		if time.Now().After(deadline) {
			t.Fatalf("never %d blocked clients", n)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// Writers cap their own fields: what can fail says which field and the
// limit; a Member's updates, which cannot fail, are cut.
func TestTheRegistryWritesNoFieldOverItsLimit(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	reg := registry.New(rdb, registry.WithLogger(slog.New(slog.DiscardHandler)))
	long := strings.Repeat("v", registry.MaxValueLen+1)
	_, err := reg.Publish(t.Context(), registry.Event{Service: "svc", Instance: "a", Event: "e", To: "y", Guard: long})
	if !errors.Is(err, registry.ErrTooLong) || !strings.Contains(err.Error(), `"guard"`) || !strings.Contains(err.Error(), strconv.Itoa(registry.MaxValueLen)) {
		t.Errorf("Publish with a long guard: %v", err)
	}
	_, err = reg.Publish(t.Context(), registry.Event{Service: "svc", Instance: "a", Event: "e", To: "y", Error: strings.Repeat("x", registry.MaxErrorLen+1)})
	if !errors.Is(err, registry.ErrTooLong) || !strings.Contains(err.Error(), `"error"`) || !strings.Contains(err.Error(), strconv.Itoa(registry.MaxErrorLen)) {
		t.Errorf("Publish with a long error: %v", err)
	}
	if err := reg.Register(t.Context(), registry.Entry{Service: "svc", Instance: "a", Version: long}); !errors.Is(err, registry.ErrTooLong) || !strings.Contains(err.Error(), `"version"`) {
		t.Errorf("Register with a long version: %v", err)
	}
	if _, err := reg.Member(registry.Entry{Service: "svc", Instance: "a", Host: long}); !errors.Is(err, registry.ErrTooLong) || !strings.Contains(err.Error(), `"host"`) {
		t.Errorf("Member with a long host: %v", err)
	}
	if n := rdb.XLen(t.Context(), registry.EventsKey).Val(); n != 0 {
		t.Fatalf("%d events written", n)
	}
	m := member(t, reg, "svc", "a", "127.0.0.1:1")
	huge := strings.Repeat("é", registry.MaxErrorLen)
	m.Update(registry.Entry{Status: "failed", Error: huge}, &registry.Event{Event: "boom", From: "running", To: "failed", Error: huge, Phase: long})
	eventually(t, 5*time.Second, func() {}, func() bool { return rdb.XLen(t.Context(), registry.EventsKey).Val() == 1 }, "the event written")
	evs, _, err := reg.Events(t.Context(), "0", 0, 0)
	if err != nil || len(evs) != 1 {
		t.Fatalf("%+v %v", evs, err)
	}
	if ev := evs[0]; len(ev.Error) > registry.MaxErrorLen || !strings.HasSuffix(ev.Error, "…") || len(ev.Phase) > registry.MaxValueLen {
		t.Fatalf("event written with error of %d bytes, phase of %d", len(ev.Error), len(ev.Phase))
	}
	e, err := reg.Entry(t.Context(), "svc", "a")
	if err != nil || len(e.Error) > registry.MaxErrorLen || !strings.HasSuffix(e.Error, "…") {
		t.Fatalf("entry written with an error of %d bytes: %v", len(e.Error), err)
	}
}

// Through a client it cannot copy a Watcher cannot guard a blocking read:
// it polls, every 100ms, and still follows the service.
func TestAWatcherOnAClientItCannotCopyPolls(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	reg := registry.New(sharedClient{rdb}, registry.WithLogger(slog.New(slog.DiscardHandler)))
	w := watch(t, reg, "svc")
	runningMember(t, registry.New(rdb), "svc", "a", "127.0.0.1:1")
	took := waitRunning(t, w, 5*time.Second, "a")
	t.Logf("in the view %v after the transition", took)
	if n := blockedClients(t, rdb); n != 0 {
		t.Fatalf("%d clients blocked: the watcher blocked on the caller's client", n)
	}
}

type sharedClient struct{ *redis.Client }

// List, and so sgctl ps, the dashboard and a Watcher's resync, skips an entry
// someone bloated, unread, naming it, and lists the others.
func TestListSkipsAnOversizedEntryUnreadAndListsTheRest(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	var logs strings.Builder
	reg := registry.New(rdb, registry.WithLogger(slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))))
	if err := reg.Register(t.Context(), registry.Entry{Service: "svc", Instance: "a", Status: "running"}); err != nil {
		t.Fatal(err)
	}
	payload := strings.Repeat("x", 32<<20)
	if err := rdb.Set(t.Context(), registry.EntryKey("svc", "bloated"), payload, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(t.Context(), registry.IndexKey("svc"), redis.Z{Score: float64(time.Now().Add(time.Minute).UnixMilli()), Member: "bloated"}).Err(); err != nil {
		t.Fatal(err)
	}
	before := allocated()
	ins, err := reg.List(t.Context(), "svc")
	if err != nil || len(ins) != 1 || ins[0].Instance != "a" {
		t.Fatalf("List: %+v %v, want a alone", ins, err)
	}
	if a := allocated() - before; a > 1<<20 {
		t.Errorf("List allocated %d bytes: the oversized entry was loaded", a)
	}
	if l := logs.String(); !strings.Contains(l, "skipping an oversized entry unread") || !strings.Contains(l, "bloated") ||
		!strings.Contains(l, strconv.Itoa(registry.MaxEntryJSONLen)) {
		t.Errorf("no warning naming the key and the limit:\n%s", l)
	}
}

// An entry rewritten while a reader reads it is read, never reported
// absent: the reader's length and its bounded range are two commands of one
// pipeline, and another client's SET may land between them. A Redis server
// runs a pipeline's commands as they arrive, and one that arrives in several
// reads (a listing of many entries) lets other clients' commands in between;
// miniredis runs every connection's commands one at a time, interleaved, so
// it shows the race at every run (96 of 524 reads missed the entry before
// the fix). A writer rewrites one entry with values of two lengths as fast
// as Redis takes them, while Entry and List read it.
func TestAnEntryRewrittenWhileItIsReadIsNeverReportedAbsent(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	writer := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	defer writer.Close()
	reg := registry.New(rdb)
	const n = 400
	for i := range n {
		if err := reg.Register(t.Context(), registry.Entry{Service: "svc", Instance: fmt.Sprintf("i-%03d", i), Status: "running"}); err != nil {
			t.Fatal(err)
		}
	}
	last := fmt.Sprintf("i-%03d", n-1)
	key := registry.EntryKey("svc", last)
	values := []string{}
	for _, status := range []string{"running", "draining for a while, with a longer status"} {
		v, err := json.Marshal(registry.Entry{Service: "svc", Instance: last, Status: status})
		if err != nil {
			t.Fatal(err)
		}
		values = append(values, string(v))
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = writer.Set(context.Background(), key, values[i%2], time.Minute).Err()
		}
	}()
	defer func() { close(stop); <-done }()
	missed, reads := 0, 0
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); reads += 2 {
		if _, err := reg.Entry(t.Context(), "svc", last); err != nil {
			if !errors.Is(err, registry.ErrNotFound) {
				t.Fatal(err)
			}
			missed++
		}
		ins, err := reg.List(t.Context(), "svc")
		if err != nil {
			t.Fatal(err)
		}
		if len(ins) != n {
			missed++
		}
	}
	if missed > 0 {
		t.Fatalf("%d of %d reads of an entry being rewritten found nothing", missed, reads)
	}
	t.Logf("%d reads while the entry was rewritten, none missed it", reads)
}
