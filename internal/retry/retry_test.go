package retry_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/internal/retry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// secondAttempts starts n loops at one fake instant, each dialling a refused
// port and retrying with its own Backoff from newBackoff; it steps the clock
// through the first round's interval, a hundredth at a time, and returns for
// each loop how long after the first attempt its second one came.
func secondAttempts(t *testing.T, n int, p retry.Policy, newBackoff func(i int, clk clockwork.Clock) *retry.Backoff) []time.Duration {
	t.Helper()
	addr := redistest.RefusedAddr(t)
	clk := clockwork.NewFakeClock()
	start := clk.Now()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var planned, second []time.Duration
	for i := range n {
		b := newBackoff(i, clk)
		wg.Go(func() {
			for attempt := 1; ; attempt++ {
				conn, err := net.Dial("tcp", addr)
				if err == nil {
					conn.Close()
					t.Errorf("dial %s: connected, want refused", addr)
					return
				}
				mu.Lock()
				if attempt == 2 {
					second = append(second, clk.Since(start))
					mu.Unlock()
					return
				}
				wait := b.Failed(ctx, err)
				planned = append(planned, wait)
				mu.Unlock()
				if !b.Wait(ctx, wait) {
					return
				}
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()
	// Every loop made its first attempt and waits its backoff.
	if err := clk.BlockUntilContext(ctx, n); err != nil {
		t.Fatal(err)
	}
	step := p.Min / 100
	for clk.Since(start) < p.Min+step {
		clk.Advance(step)
		// The step is over once every loop whose wait it covered made its
		// second attempt: each attempt's time is then its own step's.
		elapsed := clk.Since(start)
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			due := 0
			for _, w := range planned {
				if w <= elapsed {
					due++
				}
			}
			got := len(second)
			mu.Unlock()
			if got == due {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("at %v: %d loops were due to retry, %d did", elapsed, due, got)
			}
			time.Sleep(time.Millisecond) // polling for real goroutines, with a deadline
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(second) != n {
		t.Fatalf("%d of %d loops retried within the first round's interval %v", len(second), n, p.Min)
	}
	return slices.Clone(second)
}

// windows counts the attempts in each tenth of interval.
func windows(attempts []time.Duration, interval time.Duration) [10]int {
	var w [10]int
	for _, d := range attempts {
		i := int(d * 10 / (interval + 1))
		w[min(i, 9)]++
	}
	return w
}

func TestAHundredLoopsFailingAtOnceRetrySpreadOverTheInterval(t *testing.T) {
	p := retry.Policy{Min: time.Second, Max: 5 * time.Second}
	second := secondAttempts(t, 100, p, func(i int, clk clockwork.Clock) *retry.Backoff {
		// Each process seeds its own source: as 100 instances of a fleet would.
		return retry.New("dial", p, retry.WithClock(clk), retry.WithRand(rand.New(rand.NewPCG(uint64(i), 42)).Float64))
	})
	w := windows(second, p.Min)
	for i, n := range w {
		if n > 25 {
			t.Errorf("window %d of the first round (%v-%v) holds %d of the 100 second attempts, want at most 25: %v",
				i, p.Min*time.Duration(i)/10, p.Min*time.Duration(i+1)/10, n, w)
		}
	}
	t.Logf("second attempts per tenth of the %v interval: %v", p.Min, w)
}

func TestWithoutJitterEveryLoopRetriesInOneWindow(t *testing.T) {
	// The control of the test above: the same loops with the jitter's source
	// fixed at its top retry all at once, so the test above can fail.
	p := retry.Policy{Min: time.Second, Max: 5 * time.Second}
	second := secondAttempts(t, 100, p, func(i int, clk clockwork.Clock) *retry.Backoff {
		return retry.New("dial", p, retry.WithClock(clk), retry.WithRand(func() float64 { return 0.9999 }))
	})
	w := windows(second, p.Min)
	if w[9] != 100 {
		t.Fatalf("second attempts per tenth: %v, want all 100 in the last", w)
	}
}

func TestTheCeilingDoublesFromMinUpToMax(t *testing.T) {
	b := retry.New("x", retry.Policy{Min: 100 * time.Millisecond, Max: time.Second}, retry.WithRand(func() float64 { return 0.9999999 }))
	var got []time.Duration
	for range 6 {
		got = append(got, b.Ceiling())
		b.Failed(context.Background(), errors.New("refused"))
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ceilings %v, want %v", got, want)
		}
	}
	b.Succeeded(context.Background())
	if c := b.Ceiling(); c != 100*time.Millisecond {
		t.Fatalf("ceiling after a success %v, want the first round's again", c)
	}
}

func TestWaitsStayWithinTheCeiling(t *testing.T) {
	for _, r := range []float64{0, 0.5, 0.9999999} {
		b := retry.New("x", retry.Policy{Min: 100 * time.Millisecond, Max: time.Second}, retry.WithRand(func() float64 { return r }))
		for range 8 {
			c := b.Ceiling()
			if d := b.Failed(context.Background(), errors.New("refused")); d < 0 || d > c {
				t.Fatalf("rand %v: wait %v outside [0, %v]", r, d, c)
			}
		}
	}
}

func TestAnOutageIsLoggedOnceAtWarnAndItsEndAtInfo(t *testing.T) {
	var buf bytes.Buffer
	clk := clockwork.NewFakeClock()
	b := retry.New("registry writes", retry.Default, retry.WithClock(clk),
		retry.WithLogger(slog.New(slog.NewTextHandler(&buf, nil))))
	ctx := context.Background()
	for range 20 {
		clk.Advance(b.Failed(ctx, errors.New("connection refused"), "service", "demo"))
	}
	b.Succeeded(ctx, "service", "demo")
	b.Succeeded(ctx) // no run in progress: nothing
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want a warn and an info:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], `msg="registry writes failing; retrying with backoff"`) ||
		!strings.Contains(lines[0], `error="connection refused"`) || !strings.Contains(lines[0], "service=demo") {
		t.Errorf("first line %q, want the warn naming the loop, the error and the caller's attributes", lines[0])
	}
	if !strings.Contains(lines[1], "level=INFO") || !strings.Contains(lines[1], `msg="registry writes recovered"`) || !strings.Contains(lines[1], "failures=20") {
		t.Errorf("last line %q, want the info with the number of failures", lines[1])
	}
}

func TestALongOutageIsLoggedAgainAtMostOnceAMinute(t *testing.T) {
	var buf bytes.Buffer
	clk := clockwork.NewFakeClock()
	b := retry.New("reads", retry.Policy{Min: time.Second, Max: time.Second}, retry.WithClock(clk),
		retry.WithLogger(slog.New(slog.NewTextHandler(&buf, nil))), retry.WithRand(func() float64 { return 0.9999999 }))
	for range 150 { // 150 failures a second apart: 2.5 minutes
		b.Failed(context.Background(), errors.New("refused"))
		clk.Advance(time.Second)
	}
	if n := strings.Count(buf.String(), "level=WARN"); n != 3 {
		t.Fatalf("%d warn lines in 2.5 minutes of failures, want 3 (at once, then one a minute):\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "suppressed=59") {
		t.Fatalf("the repeated lines do not count what was left out:\n%s", buf.String())
	}
}

func TestWaitEndsWithItsContext(t *testing.T) {
	clk := clockwork.NewFakeClock()
	b := retry.New("x", retry.Default, retry.WithClock(clk))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool)
	go func() { done <- b.Wait(ctx, time.Hour) }()
	if err := clk.BlockUntilContext(ctxWithTimeout(t), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	if <-done {
		t.Fatal("Wait ran its course after its context ended")
	}
	go func() { done <- b.Wait(context.Background(), time.Second) }()
	if err := clk.BlockUntilContext(ctxWithTimeout(t), 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if !<-done {
		t.Fatal("Wait reported an ended context after its time")
	}
}

func ctxWithTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
