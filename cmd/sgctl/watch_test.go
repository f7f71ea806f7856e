package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// watching is an `sgctl watch` running in a goroutine until stop.
type watching struct {
	t      *testing.T
	stdout *syncBuffer
	stderr *syncBuffer
	cancel context.CancelFunc
	code   chan int
}

func startWatch(t *testing.T, env map[string]string, args ...string) *watching {
	t.Helper()
	return startWatchWith(t, env, nil, args...)
}

// startWatchWith is startWatch with mod applied to the app first (nil: none).
func startWatchWith(t *testing.T, env map[string]string, mod func(*app), args ...string) *watching {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	w := &watching{t: t, stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, code: make(chan int, 1)}
	a := newTestApp(env, nil, w.stdout, w.stderr)
	if mod != nil {
		mod(a)
	}
	go func() { w.code <- a.main(ctx, append([]string{"watch"}, args...)) }()
	// Whatever happens, the goroutine is stopped and awaited before goleak looks.
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.code:
		case <-time.After(10 * time.Second):
			t.Error("watch did not return within 10s of its cancellation")
		}
	})
	return w
}

// ready waits until the watch printed its first output (the header, or the
// first line with --json), which it does once its start position is fixed.
func (w *watching) ready(json bool) {
	w.t.Helper()
	if json {
		return
	}
	eventually(w.t, 5*time.Second, func() bool { return strings.Contains(w.stdout.String(), "TIME") },
		func() string { return "no header; stderr: " + w.stderr.String() })
}

func (w *watching) waitFor(s string) {
	w.t.Helper()
	eventually(w.t, 5*time.Second, func() bool { return strings.Contains(w.stdout.String(), s) },
		func() string {
			return "output lacks " + s + ":\n" + w.stdout.String() + "\nstderr:\n" + w.stderr.String()
		})
}

// stop cancels the watch as Ctrl-C does and returns its exit code.
func (w *watching) stop() int {
	w.t.Helper()
	w.cancel()
	select {
	case c := <-w.code:
		w.code <- c // for the cleanup
		return c
	case <-time.After(5 * time.Second):
		w.t.Fatal("watch did not return within 5s of its cancellation")
		return -1
	}
}

func publisher(t *testing.T, addr string) *registry.Registry {
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return registry.New(c)
}

func publish(t *testing.T, reg *registry.Registry, ev registry.Event) {
	t.Helper()
	if _, err := reg.Publish(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 250e6, time.UTC)

func TestWatchPrintsTransitionsMadeAfterItStartedAndExits0OnCancel(t *testing.T) {
	mr := miniredis.RunT(t)
	reg := publisher(t, mr.Addr())
	publish(t, reg, registry.Event{Service: "demo", Instance: "old", Event: "connect", From: "init", To: "connecting", Phase: "2", Time: t0})

	w := startWatch(t, map[string]string{"REDIS_URL": "redis://" + mr.Addr()})
	w.ready(false)
	publish(t, reg, registry.Event{Service: "demo", Instance: "demo-1", Event: "ping_failed", From: "connecting", To: "configuring",
		Guard: "not redis_required", Phase: "3", Degraded: true, Time: t0, Error: "dial tcp: refused"})
	publish(t, reg, registry.Event{Service: "demo", Instance: "demo-1", Event: "restart", From: "running", To: "stopping_daemons", Time: t0.Add(time.Second)})
	w.waitFor("stopping_daemons")
	if code := w.stop(); code != exitOK {
		t.Fatalf("exit code %d after cancel, want 0", code)
	}

	got := rows(w.stdout.String())
	want := [][]string{
		{"TIME", "SERVICE", "INSTANCE", "FROM", "->", "TO", "EVENT", "GUARD", "PHASE", "ERROR"},
		{"2026-03-01T12:00:00.250Z", "demo", "demo-1", "connecting", "->", "configuring", "ping_failed", "not", "redis_required", "3", `"dial`, `tcp:`, `refused"`},
		{"2026-03-01T12:00:01.250Z", "demo", "demo-1", "running", "->", "stopping_daemons", "restart", "-", "-", "-"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d lines, want %d (the event before the watch must not show):\n%s", len(got), len(want), w.stdout.String())
	}
	for i := range want {
		if strings.Join(got[i], " ") != strings.Join(want[i], " ") {
			t.Errorf("line %d:\n got %q\nwant %q", i, got[i], want[i])
		}
	}
}

func TestWatchJSONPrintsOneDecodableObjectPerTransition(t *testing.T) {
	mr := miniredis.RunT(t)
	reg := publisher(t, mr.Addr())
	w := startWatch(t, map[string]string{"REDIS_URL": "redis://" + mr.Addr()}, "--json")
	// With --json there is no header saying the watch has fixed its start:
	// publish until the event shows (identical events, any of them will do).
	eventually(t, 5*time.Second, func() bool {
		publish(t, reg, registry.Event{Service: "demo", Instance: "demo-1", Event: "pull", From: "running", To: "pulling", Time: t0, TraceID: "4bf92f3577b34da6a3ce929d0e0e4736"})
		return strings.Contains(w.stdout.String(), "pulling")
	}, func() string { return "no event printed" })
	w.stop()

	line, _, _ := strings.Cut(w.stdout.String(), "\n")
	var ev watchEvent
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Fatalf("line does not decode: %v\n%s", err, line)
	}
	if ev.ID == "" || ev.Service != "demo" || ev.Instance != "demo-1" || ev.From != "running" || ev.To != "pulling" ||
		ev.Event != "pull" || !ev.Time.Equal(t0) || ev.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("decoded %+v", ev)
	}
}

func TestWatchFromZeroReplaysTheStreamAndFiltersByServiceAndInstance(t *testing.T) {
	mr := miniredis.RunT(t)
	reg := publisher(t, mr.Addr())
	for _, ev := range []registry.Event{
		{Service: "demo", Instance: "demo-1", Event: "connect", From: "init", To: "connecting"},
		{Service: "api", Instance: "api-1", Event: "connect", From: "init", To: "connecting"},
		{Service: "demo", Instance: "demo-2", Event: "connect", From: "init", To: "connecting"},
		{Service: "demo", Instance: "demo-1", Event: "ping_ok", From: "connecting", To: "configuring"},
	} {
		publish(t, reg, ev)
	}
	w := startWatch(t, map[string]string{"REDIS_URL": "redis://" + mr.Addr()}, "demo", "--instance", "demo-1", "--from", "0")
	w.waitFor("ping_ok")
	w.stop()
	out := w.stdout.String()
	if strings.Contains(out, "api-1") || strings.Contains(out, "demo-2") || strings.Count(out, "demo-1") != 2 {
		t.Fatalf("want only demo-1's two transitions:\n%s", out)
	}
}

func TestWatchSurvivesARedisRestartAndKeepsPrinting(t *testing.T) {
	srv := redistest.Server(t)
	reg := publisher(t, srv.Addr())
	w := startWatch(t, map[string]string{"REDIS_URL": srv.URL()})
	w.ready(false)
	publish(t, reg, registry.Event{Service: "demo", Instance: "before", Event: "connect", From: "init", To: "connecting"})
	w.waitFor("before")

	srv.Restart()
	eventually(t, 10*time.Second, func() bool {
		publish(t, reg, registry.Event{Service: "demo", Instance: "after", Event: "connect", From: "init", To: "connecting"})
		return strings.Contains(w.stdout.String(), "after")
	}, func() string { return "nothing printed after the restart; stderr: " + w.stderr.String() })
	if code := w.stop(); code != exitOK {
		t.Fatalf("exit code %d, want 0", code)
	}
}

func TestWatchWaitsItsBackoffOnItsClockWhileRedisIsDownAndSaysWhenItAnswersAgain(t *testing.T) {
	srv := redistest.Server(t)
	reg := publisher(t, srv.Addr())
	clock := clockwork.NewFakeClock()
	// The jitter draws the middle of each interval: 50ms, then 100ms.
	w := startWatchWith(t, map[string]string{"REDIS_URL": srv.URL()}, func(a *app) {
		a.clock, a.rand = clock, func() float64 { return 0.5 }
	})
	w.ready(false)

	srv.Kill()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	waiting := func(wait string) {
		t.Helper()
		if err := clock.BlockUntilContext(ctx, 1); err != nil {
			t.Fatalf("the watch is not waiting on its clock: %v\nstderr:\n%s", err, w.stderr.String())
		}
		if l := lastLine(w.stderr.String()); !strings.Contains(l, "cannot reach Redis at "+srv.Addr()) || !strings.HasSuffix(l, "; retrying in "+wait) {
			t.Fatalf("stderr ends with %q, want the address and \"retrying in %s\"", l, wait)
		}
	}
	waiting("50ms")
	clock.Advance(50 * time.Millisecond)
	waiting("100ms")

	srv.Restart()
	clock.Advance(100 * time.Millisecond)
	eventually(t, 10*time.Second, func() bool {
		publish(t, reg, registry.Event{Service: "demo", Instance: "after", Event: "connect", From: "init", To: "connecting"})
		return strings.Contains(w.stdout.String(), "after")
	}, func() string { return "nothing printed after Redis came back; stderr: " + w.stderr.String() })
	if got := w.stderr.String(); strings.Count(got, "answers again; resuming after") != 1 {
		t.Errorf("stderr:\n%s\nwant one line saying Redis answers again", got)
	}
	if code := w.stop(); code != exitOK {
		t.Fatalf("exit code %d, want 0", code)
	}
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
