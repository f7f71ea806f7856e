package health

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
)

// countingPinger counts PINGs and fails them while down is set.
type countingPinger struct {
	mu    sync.Mutex
	pings int
	down  bool
}

func (p *countingPinger) Ping(ctx context.Context) *redis.StatusCmd {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pings++
	cmd := redis.NewStatusCmd(ctx, "ping")
	if p.down {
		cmd.SetErr(errors.New("dial tcp 127.0.0.1:6379: connect: connection refused"))
	}
	return cmd
}

func (p *countingPinger) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pings
}

func (p *countingPinger) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
}

// The Redis check is most of an idle instance's load on Redis: the refresher
// runs it every 30s while it passes, and every round (5s) while it fails, so
// that readiness comes back within a round of Redis.
func TestRedisCheckPingsEveryRedisIntervalWhilePassingAndEveryRoundWhileFailing(t *testing.T) {
	clock := clockwork.NewFakeClock()
	p := &countingPinger{}
	other := 0
	s := newServer(t, newSource("running", clock.Now()), WithClock(clock), WithRedis(p, true),
		WithCheck("db:ping", func(context.Context) error { other++; return nil }))
	ctx := context.Background()
	s.Refresh(ctx) // the first round, as Start runs it
	// round advances the clock by one refresh interval and runs the
	// refresher's round, and returns the pings so far.
	round := func() int {
		clock.Advance(DefaultInterval)
		s.refresh(ctx, true)
		return p.count()
	}
	for i := 1; i < 6; i++ {
		if n := round(); n != 1 {
			t.Fatalf("%d PINGs %v after the first: want none before %v", n-1, time.Duration(i)*DefaultInterval, DefaultRedisInterval)
		}
	}
	if n := round(); n != 2 {
		t.Fatalf("%d PINGs after %v, want 2", n, DefaultRedisInterval)
	}
	if other != 7 {
		t.Errorf("a check without an interval of its own ran %d times in 7 rounds", other)
	}
	p.setDown(true)
	for range 5 {
		round()
	}
	if n := round(); n != 3 {
		t.Fatalf("%d PINGs after %v, want 3", n, 2*DefaultRedisInterval)
	}
	if code, _ := probe(t, s.Handler(), "/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d with the required Redis check failing, want 503", code)
	}
	if n := round(); n != 4 {
		t.Fatalf("%d PINGs one round after a failure, want 4: a failing check runs every round", n)
	}
	p.setDown(false)
	if n := round(); n != 5 {
		t.Fatalf("%d PINGs, want 5", n)
	}
	if code, _ := probe(t, s.Handler(), "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d one round after Redis came back, want 200", code)
	}
	if n := round(); n != 5 {
		t.Fatalf("%d PINGs, want still 5: a passing check waits its interval again", n)
	}
	// Refresh, as tests and Start call it, runs every check whatever its interval.
	s.Refresh(ctx)
	if n := p.count(); n != 6 {
		t.Fatalf("Refresh did not run the Redis check (%d PINGs)", n)
	}
}

func TestWithRedisIntervalAndEverySetTheInterval(t *testing.T) {
	clock := clockwork.NewFakeClock()
	p := &countingPinger{}
	ran := 0
	s := newServer(t, newSource("running", clock.Now()), WithClock(clock), WithRedisInterval(10*time.Second), WithRedis(p, false),
		WithCheck("costly:ping", func(context.Context) error { ran++; return nil }, Every(15*time.Second)))
	ctx := context.Background()
	s.Refresh(ctx)
	for range 6 { // 30s
		clock.Advance(DefaultInterval)
		s.refresh(ctx, true)
	}
	if n := p.count(); n != 4 {
		t.Errorf("Redis check with a 10s interval ran %d times in 30s, want 4 (at 0, 10, 20, 30s)", n)
	}
	if ran != 3 {
		t.Errorf("check with Every(15s) ran %d times in 30s, want 3 (at 0, 15, 30s)", ran)
	}
}
