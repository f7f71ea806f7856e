package dashboard

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// stream is one browser's /events connection: the transitions it
// received, by stream id, in order.
type stream struct {
	mu  sync.Mutex
	ids []string
	res *http.Response
}

func (st *stream) has(id string) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, x := range st.ids {
		if x == id {
			return true
		}
	}
	return false
}

func (st *stream) got() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]string(nil), st.ids...)
}

// openStream connects to /events with the given Last-Event-ID ("" for
// none) and reads it in a goroutine the test's cleanup awaits.
func openStream(t *testing.T, r *rig, lastID string, wg *sync.WaitGroup) *stream {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, r.http.URL+"/events", nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET /events = %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	return readStream(res, wg)
}

// readStream reads the ids of res's events in a goroutine that wg counts,
// until the body ends; it closes the body.
func readStream(res *http.Response, wg *sync.WaitGroup) *stream {
	st := &stream{res: res}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
				st.mu.Lock()
				st.ids = append(st.ids, id)
				st.mu.Unlock()
			}
		}
	}()
	return st
}

// xreaders counts the connections of Redis blocked in, or last running,
// XREAD on the events stream.
func xreaders(t *testing.T, rdb *redis.Client) int {
	t.Helper()
	list, err := rdb.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, " cmd=xread") {
			n++
		}
	}
	return n
}

func TestAHundredBrowsersCostOneRedisReader(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	dash := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	defer dash.Close()
	// A hundred live streams: above the default cap (DefaultMaxSubscribers).
	r := newRig(t, dash, func(c *Config) { c.Limits.MaxSubscribers = 100 })
	reg := registry.New(rdb)

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	streams := make([]*stream, 100)
	for i := range streams {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.http.URL+"/events", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		streams[i] = readStream(res, &wg)
	}
	eventually(t, 10*time.Second, func() bool { return r.srv.hub.subscribers() == 100 && xreaders(t, rdb) == 1 },
		func() string {
			return fmt.Sprintf("%d browsers connected, %d XREAD connections", r.srv.hub.subscribers(), xreaders(t, rdb))
		})

	var ids []string
	for i := range 5 {
		id, err := reg.Publish(t.Context(), registry.Event{Service: "demo", Instance: fmt.Sprintf("demo-%d", i), Event: "connect", From: "init", To: "connecting"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	eventually(t, 5*time.Second, func() bool {
		for _, st := range streams {
			if len(st.got()) < len(ids) {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("browser 0 got %v of %v", streams[0].got(), ids) })
	for i, st := range streams {
		if got := strings.Join(st.got(), " "); got != strings.Join(ids, " ") {
			t.Errorf("browser %d got %s, want %s in order", i, got, strings.Join(ids, " "))
		}
	}
	// One reader of the stream, whatever the number of browsers: count the
	// connections whose command is XREAD, many times while the reader goes
	// back to its blocking read (between two reads its connection's last
	// command may be the GET of an entry: 0 then, never 2).
	most := 0
	eventually(t, 5*time.Second, func() bool {
		n := xreaders(t, rdb)
		most = max(most, n)
		return n == 1
	}, func() string { return "the reader never went back to XREAD" })
	for range 50 {
		most = max(most, xreaders(t, rdb))
	}
	if most != 1 {
		t.Errorf("%d Redis connections read the events stream at once for 100 browsers, want 1", most)
	}
	stats := dash.PoolStats()
	t.Logf("100 browsers: %d Redis connections in the dashboard's pool, 1 XREAD among them", stats.TotalConns)
	if stats.TotalConns > 3 {
		t.Errorf("the dashboard holds %d Redis connections for 100 browsers", stats.TotalConns)
	}
	cancel()
}

func TestABrowserResumesAfterTheLastIDItSaw(t *testing.T) {
	r, _ := miniRig(t, nil)
	reg := registry.New(r.rdb)
	eventually(t, 5*time.Second, func() bool { r.srv.hub.mu.Lock(); defer r.srv.hub.mu.Unlock(); return r.srv.hub.ready },
		func() string { return "the reader never started" })
	var wg sync.WaitGroup
	defer wg.Wait()
	first := openStream(t, r, "", &wg)
	var ids []string
	for i := range 4 {
		id, err := reg.Publish(t.Context(), registry.Event{Service: "demo", Instance: "demo-1", Event: fmt.Sprint("e", i), From: "a", To: "b"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	eventually(t, 5*time.Second, func() bool { return first.has(ids[3]) }, func() string { return fmt.Sprint(first.got()) })
	// A browser that saw ids[1] gets exactly what came after it.
	again := openStream(t, r, ids[1], &wg)
	eventually(t, 5*time.Second, func() bool { return again.has(ids[3]) }, func() string { return fmt.Sprint(again.got()) })
	if got := strings.Join(again.got(), " "); got != ids[2]+" "+ids[3] {
		t.Errorf("resumed after %s: got %s, want %s %s", ids[1], got, ids[2], ids[3])
	}
	first.res.Body.Close()
	again.res.Body.Close()
}

func TestABrowserBehindTheMemoryResumesFromTheStream(t *testing.T) {
	r, _ := miniRig(t, nil)
	reg := registry.New(r.rdb)
	old, err := reg.Publish(t.Context(), registry.Event{Service: "demo", Instance: "demo-1", Event: "connect", From: "init", To: "connecting"})
	if err != nil {
		t.Fatal(err)
	}
	missed, _ := reg.Publish(t.Context(), registry.Event{Service: "demo", Instance: "demo-1", Event: "ping_ok", From: "connecting", To: "configuring"})
	// The reader starts at the stream's end: both events are older than
	// what it holds in memory.
	eventually(t, 5*time.Second, func() bool { r.srv.hub.mu.Lock(); defer r.srv.hub.mu.Unlock(); return r.srv.hub.ready },
		func() string { return "the reader never started" })
	var wg sync.WaitGroup
	defer wg.Wait()
	st := openStream(t, r, old, &wg)
	eventually(t, 5*time.Second, func() bool { return st.has(missed) }, func() string { return fmt.Sprint(st.got()) })
	if got := st.got(); len(got) != 1 {
		t.Errorf("resumed after %s: got %v, want only %s", old, got, missed)
	}
	st.res.Body.Close()
}

func TestTheReaderRetriesAFailingEventsStreamOnItsBackoffAndSaysWhenItAnswersAgain(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	var logs logBuffer
	s, err := New(Config{Redis: rdb, Block: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	clock := clockwork.NewFakeClock()
	s.clock, s.rand = clock, func() float64 { return 0.5 } // half of each interval
	mr.SetError("ERR injected failure")

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()

	// The first read fails: one warning, and a wait of half the first 100ms
	// on the reader's clock.
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := clock.BlockUntilContext(wctx, 1); err != nil {
		t.Fatalf("the reader does not wait on its clock: %v\n%s", err, logs.String())
	}
	if l := logs.String(); strings.Count(l, "events stream reads failing") != 1 || !strings.Contains(l, "retry_in=50ms") ||
		!strings.Contains(l, "error=") || !strings.Contains(l, "injected failure") {
		t.Fatalf("log after the first failure:\n%s\nwant one warning with retry_in=50ms and the error", l)
	}
	mr.SetError("")
	clock.Advance(50 * time.Millisecond)
	eventually(t, 5*time.Second, func() bool {
		s.hub.mu.Lock()
		defer s.hub.mu.Unlock()
		return s.hub.ready && strings.Contains(logs.String(), "events stream reads recovered")
	}, func() string { return "the reader did not resume:\n" + logs.String() })
	if l := logs.String(); !strings.Contains(l, "level=INFO") || !strings.Contains(l, "failures=1") {
		t.Errorf("recovery line:\n%s\nwant an info line counting one failure", l)
	}
}
