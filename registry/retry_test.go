package registry_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// secondWrites starts n Members at one instant of a fake clock, each with a
// registry and a go-redis client of its own (as n processes of a fleet
// have), all writing to a refused loopback port, member i drawing its jitter
// from rnd(i). It steps the clock through the first round's interval (minWait),
// a hundredth at a time, and returns for each member how long after its
// first write attempt its second one came.
func secondWrites(t *testing.T, n int, minWait, maxWait time.Duration, rnd func(i int) func() float64) []time.Duration {
	t.Helper()
	addr := redistest.RefusedAddr(t)
	clk := clockwork.NewFakeClock()
	start := clk.Now()
	quiet := slog.New(slog.DiscardHandler)
	members := make([]*registry.Member, n)
	for i := range n {
		// One dial per write attempt: the writer's backoff, not the client's, retries.
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1})
		t.Cleanup(func() { _ = c.Close() })
		r := registry.New(c, registry.WithClock(clk), registry.WithLogger(quiet),
			registry.WithRetryBackoff(minWait, maxWait), registry.WithRand(rnd(i)))
		m, err := r.Member(entry("api", fmt.Sprintf("api-%03d", i), "init"))
		if err != nil {
			t.Fatal(err)
		}
		members[i] = m
	}
	t.Cleanup(func() {
		// Nothing can be delivered: Close gives up at once and stops the writers.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for _, m := range members {
			_ = m.Close(ctx)
		}
	})
	for i, m := range members {
		m.Update(entry("api", fmt.Sprintf("api-%03d", i), "connecting"), transition("init", "connecting"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	second := make([]time.Duration, n)
	seen := make([]bool, n)
	// record notes the members whose second attempt has happened by now.
	record := func() int {
		got := 0
		for i, m := range members {
			if !seen[i] && m.Stats().Failures >= 2 {
				second[i], seen[i] = clk.Since(start), true
			}
			if seen[i] {
				got++
			}
		}
		return got
	}
	// Every writer made its first attempt, failed, and waits its backoff on
	// the clock: a writer counts its failure before it starts to wait.
	if err := clk.BlockUntilContext(ctx, n); err != nil {
		t.Fatalf("waiting for %d writers to back off: %v", n, err)
	}
	record()
	step := minWait / 100
	for clk.Since(start) < minWait+step {
		clk.Advance(step)
		// The step is over once every writer whose wait it ended has made
		// its second attempt and waits again: each attempt is then counted
		// at its own step.
		if err := clk.BlockUntilContext(ctx, n); err != nil {
			t.Fatalf("at %v: waiting for the writers to back off again: %v", clk.Since(start), err)
		}
		record()
	}
	if got := record(); got != n {
		t.Fatalf("%d of %d members made a second write attempt within the first round's interval %v", got, n, minWait)
	}
	return second
}

// tenths counts the attempts in each tenth of interval.
func tenths(attempts []time.Duration, interval time.Duration) [10]int {
	var w [10]int
	for _, d := range attempts {
		i := int(d * 10 / (interval + 1))
		w[min(i, 9)]++
	}
	return w
}

func TestAHundredMembersLosingRedisAtOnceRetrySpreadOverTheInterval(t *testing.T) {
	const minWait, maxWait = time.Second, 5 * time.Second
	second := secondWrites(t, 100, minWait, maxWait, func(i int) func() float64 {
		// Each process seeds its own source, as 100 instances of a fleet do.
		return rand.New(rand.NewPCG(uint64(i), 7)).Float64
	})
	w := tenths(second, minWait)
	for i, n := range w {
		if n > 25 {
			t.Errorf("tenth %d of the first round (%v-%v) holds %d of the 100 second write attempts, want at most 25: %v",
				i, minWait*time.Duration(i)/10, minWait*time.Duration(i+1)/10, n, w)
		}
	}
	t.Logf("second write attempts per tenth of the %v interval: %v", minWait, w)
}

func TestWithoutJitterEveryMemberRetriesInOneWindow(t *testing.T) {
	// The control of the test above: the same members with the jitter's
	// source fixed at its top all retry at the same moment, so the test above
	// can fail.
	const minWait, maxWait = time.Second, 5 * time.Second
	second := secondWrites(t, 100, minWait, maxWait, func(int) func() float64 { return func() float64 { return 0.9999 } })
	if w := tenths(second, minWait); w[9] != 100 {
		t.Fatalf("second write attempts per tenth: %v, want all 100 in the last", w)
	}
}
