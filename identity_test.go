package lifecycle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// Two instances with one instance id, as two processes started with the same
// SG_INSTANCE_ID: the newer takes the entry over, the older finds out at its
// next heartbeat and warns on /healthz; stopping the older one leaves the
// newer one's entry in place.
func TestOlderInstanceWithTheSameIDWarnsOnHealthzAndKeepsTheOthersEntry(t *testing.T) {
	f := newFixture(t)
	olderLogs := &safeBuffer{}
	older, err := New(newTestService(), f.options(WithLogger(olderLogs.logger()))...)
	if err != nil {
		t.Fatal(err)
	}
	olderDone := startRun(t, older)
	waitState(t, older, phases.Running)

	newerLogs := &safeBuffer{}
	newer, err := New(newTestService(), f.options(WithLogger(newerLogs.logger()))...)
	if err != nil {
		t.Fatal(err)
	}
	newerDone := startRun(t, newer)
	waitState(t, newer, phases.Running)
	reg := registry.New(f.client)
	ctx := context.Background()
	owner := newer.member.Load().Owner()
	if e, err := reg.Entry(ctx, "svc", "i-1"); err != nil || e.Owner != owner {
		t.Fatalf("entry %+v, %v: want the newer instance's (owner %s)", e, err, owner)
	}

	// The older instance's next heartbeat is a compare-and-set: it loses.
	deadline := time.Now().Add(10 * time.Second)
	for older.member.Load().Conflict() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the older instance never saw the other owner")
		}
		f.clock.Advance(time.Second)
		time.Sleep(time.Millisecond)
	}
	// Refresh skips a check that a background round is still running, and
	// that round may have started before the conflict: poll until a round
	// that began after it has reported.
	var body health.Response
	warned := func() bool {
		older.health.Refresh(ctx)
		body = health.Response{}
		if err := json.Unmarshal([]byte(httpGet(t, older, "/healthz")), &body); err != nil {
			t.Fatal(err)
		}
		c := body.Checks[IdentityCheck]
		return body.Status == health.StatusWarn && len(c) == 1 && c[0].Status == health.StatusWarn &&
			strings.Contains(c[0].Output, "owned by another process")
	}
	for deadline := time.Now().Add(5 * time.Second); !warned(); {
		if time.Now().After(deadline) {
			t.Fatalf("/healthz = %+v, want status warn with %s warn naming the other process", body, IdentityCheck)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !strings.Contains(olderLogs.String(), "another process owns this instance's entry") {
		t.Errorf("the older instance did not log the conflict:\n%s", olderLogs.String())
	}
	newer.health.Refresh(ctx)
	if got := httpGet(t, newer, "/healthz"); strings.Contains(got, "owned by another process") {
		t.Errorf("the newer instance warns too:\n%s", got)
	}
	if strings.Contains(newerLogs.String(), "level=ERROR") {
		t.Errorf("the newer instance logged an error:\n%s", newerLogs.String())
	}

	_ = older.Shutdown(ctx)
	if err := wait(t, olderDone); err != nil {
		t.Fatal(err)
	}
	if e, err := reg.Entry(ctx, "svc", "i-1"); err != nil || e.Owner != owner || e.Status != string(phases.Running) {
		t.Fatalf("after the older instance stopped: entry %+v, %v; want the newer one's, running", e, err)
	}
	_ = newer.Shutdown(ctx)
	if err := wait(t, newerDone); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Entry(ctx, "svc", "i-1"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("after the newer instance stopped: %v, want its entry removed", err)
	}
}

// During a Redis outage go-redis logs a line per failed dial (57 lines in 8s
// were measured). Main routes them through its logger at warn: the first at
// once, the next a minute later on the instance's clock, with the count.
func TestMainRoutesGoRedisLogLinesThroughItsLoggerOnceAMinute(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := l.Addr().String()
	l.Close() // nothing listens there any more: every dial is refused

	clk := clockwork.NewFakeClock()
	logs := &safeBuffer{}
	env := map[string]string{
		"REDIS_URL": "redis://" + refused + "/0", "SG_REDIS_REQUIRED": "false", "SG_BOOT_JITTER": "0",
		"SG_HEALTH_PORT": "0", "SG_HEALTH_HOST": "127.0.0.1",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- MainContext(ctx, newTestService(), WithEnv(envOf(env)), WithClock(clk), WithLogger(logs.logger()))
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("MainContext did not return")
		}
		// go-redis redials a refused address on a goroutine of its pool that
		// sees the closed client within a second (it sleeps 1s between dials).
		poll(t, func() bool { return !goroutineIn("ConnPool).tryDial") }, "go-redis's redial goroutine exits")
	}()
	routed := func() []string {
		var out []string
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, `msg="redis client"`) {
				out = append(out, line)
			}
		}
		return out
	}
	poll(t, func() bool { return strings.Contains(logs.String(), "boot completed") }, "boot completed, degraded")
	first := routed()
	if len(first) != 1 || !strings.Contains(first[0], "level=WARN") || !strings.Contains(first[0], "connection refused") {
		t.Fatalf("go-redis lines in the instance's log during the boot: %q, want exactly one at warn", first)
	}
	// A minute later on the instance's clock the writer retries, go-redis
	// fails to dial again, and the second line counts those left out.
	clk.Advance(61 * time.Second)
	poll(t, func() bool { return len(routed()) == 2 }, "a second go-redis line a minute later")
	second := routed()[1]
	n := regexp.MustCompile(`suppressed=(\d+)`).FindStringSubmatch(second)
	if n == nil {
		t.Fatalf("second line %q does not count the lines left out", second)
	}
	t.Logf("go-redis printed 1+%s lines during the boot against a refused port; the instance's log has 1, then the next a minute later", n[1])
}

// safeBuffer is a log sink that tests may read while instances write.
type safeBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *safeBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *safeBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(s, nil)) }

// goroutineIn reports whether a goroutine runs a function whose name
// contains fn.
func goroutineIn(fn string) bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn)
}

// poll waits for cond, failing the test after 20s.
func poll(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 20s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
