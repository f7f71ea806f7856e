package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// hugeField is the size of the field the memory tests write into sg:events:
// what a Redis writer without any key can append.
const hugeField = 100 << 20

// peakBound is how much a process's peak resident memory may grow above its
// idle resident memory while it reads past entries of hugeField bytes.
const peakBound = 64 << 20

// hugeEvents appends two events of hugeField bytes to sg:events, one of
// service and one of another service, as a Redis writer could.
func hugeEvents(t *testing.T, rdb redis.UniversalClient, service string) {
	t.Helper()
	payload := strings.Repeat("e", hugeField)
	for _, svc := range []string{service, "other"} {
		if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: registry.EventsKey, Values: []any{
			"service", svc, "instance", "huge", "event", "boom", "from", "starting", "to", "running",
			"time", time.Now().UTC().Format(time.RFC3339Nano), "error", payload,
		}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// toRunning appends a small transition of service/instance to running.
func toRunning(t *testing.T, reg *registry.Registry, service, instance string) {
	t.Helper()
	publish(t, reg, registry.Event{Service: service, Instance: instance, Event: "health_serving", From: "serving_health", To: "running"})
}

// checkPeak fails the test when p's peak resident memory since idle was
// measured (and its peak reset) is more than peakBound above it.
func checkPeak(t *testing.T, p *proctest.Proc, idle proctest.Memory, what string) {
	t.Helper()
	mem := p.Memory(t)
	t.Logf("%s: idle %s, peak %s while it read past entries of %s (bound: idle + %s)",
		p.Name(), proctest.MiB(idle.RSS), proctest.MiB(mem.Peak), proctest.MiB(hugeField), proctest.MiB(peakBound))
	if mem.Peak > idle.RSS+peakBound {
		t.Errorf("%s: peak resident memory %s, idle %s: %s", p.Name(), proctest.MiB(mem.Peak), proctest.MiB(idle.RSS), what)
	}
}

func TestSgctlWatchReadsPastHundredMegabyteEventsWithoutRaisingItsPeakMemoryBy64MiB(t *testing.T) {
	srv := redistest.Server(t)
	reg := registry.New(srv.Client(t))
	w := proctest.Start(t, proctest.Cmd{Bin: proctest.Build(t, proctest.Module+"/cmd/sgctl"), Name: "sgctl watch",
		Args: []string{"watch"}, Env: []string{"REDIS_URL=" + srv.URL()}})
	w.WaitFor(t, "TIME")
	toRunning(t, reg, "svc", "warm-up")
	w.WaitFor(t, "warm-up")
	idle := w.Memory(t)
	w.ResetPeak(t)

	hugeEvents(t, srv.Client(t), "svc")
	toRunning(t, reg, "svc", "after-huge")
	w.WaitFor(t, "after-huge")
	checkPeak(t, w, idle, "the oversized events were loaded")
	// stderr and stdout are two pipes: the warnings may arrive after the line.
	eventually(t, 5*time.Second, func() bool { return strings.Count(w.Stderr(), "skipped entry") == 2 },
		func() string { return "want two warnings of a skipped entry on stderr:\n" + w.Stderr() })
	if strings.Contains(w.Stdout(), "boom") {
		t.Errorf("an oversized event was printed:\n%.2000s", w.Stdout())
	}
}

// sse follows a dashboard's /events stream into a buffer.
func sse(t *testing.T, url string) *syncBuffer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	buf := &syncBuffer{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(buf, bufio.NewReader(resp.Body))
	}()
	t.Cleanup(func() { cancel(); _ = resp.Body.Close(); <-done })
	return buf
}

func get(t *testing.T, url string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d\n%.500s", url, resp.StatusCode, body)
	}
}

func TestTheDashboardReadsPastHundredMegabyteEventsWithoutRaisingItsPeakMemoryBy64MiB(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	reg := registry.New(rdb)
	if err := reg.Register(context.Background(), registry.Entry{Service: "svc", Instance: "a", Status: "running", Host: "h", PID: 1}); err != nil {
		t.Fatal(err)
	}
	d := proctest.Start(t, proctest.Cmd{Bin: proctest.Build(t, proctest.Module+"/cmd/sgctl"), Name: "sgctl dashboard",
		Args: []string{"dashboard", "--listen", "127.0.0.1:0"}, Env: []string{"REDIS_URL=" + srv.URL()}})
	url := d.WaitForMatch(t, regexp.MustCompile(`serving (http://127\.0\.0\.1:\d+/)`))[1]
	live := sse(t, url)
	waitText := func(s string) {
		t.Helper()
		eventually(t, 10*time.Second, func() bool { return strings.Contains(live.String(), s) },
			func() string { return fmt.Sprintf("the live stream lacks %q:\n%.2000s", s, live.String()) })
	}
	waitText("retry: 1000")
	toRunning(t, reg, "svc", "a")
	waitText(`"instance":"a"`)
	pages := []string{url, url + "service?name=svc", url + "instance?service=svc&id=a"}
	for _, p := range pages {
		get(t, p)
	}
	idle := d.Memory(t)
	d.ResetPeak(t)

	hugeEvents(t, rdb, "svc")
	// An entry of 100 MB, indexed, and a small event naming it: the live
	// stream carries each event's entry, and the pages list the service.
	if err := rdb.Set(context.Background(), registry.EntryKey("svc", "bloated"), strings.Repeat("b", hugeField), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(context.Background(), registry.IndexKey("svc"), redis.Z{Score: float64(time.Now().Add(time.Minute).UnixMilli()), Member: "bloated"}).Err(); err != nil {
		t.Fatal(err)
	}
	toRunning(t, reg, "svc", "bloated")
	toRunning(t, reg, "svc", "after-huge")
	waitText(`"instance":"after-huge"`)
	for _, p := range pages {
		get(t, p)
	}
	checkPeak(t, d, idle, "the oversized events were loaded")
	if strings.Contains(live.String(), `"instance":"huge"`) {
		t.Error("an oversized event reached the live stream")
	}
	for _, want := range []string{"oversized event skipped unread", "oversized entry skipped unread"} {
		if !strings.Contains(d.Stderr(), want) {
			t.Errorf("the dashboard did not warn %q:\n%s", want, d.Stderr())
		}
	}
}
