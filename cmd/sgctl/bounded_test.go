package main

import (
	"context"
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
	t.Logf("%s: idle %s, peak %s while it read past two events of %s (bound: idle + %s)",
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
