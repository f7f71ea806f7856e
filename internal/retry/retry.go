// Package retry is the project's one retry policy: exponential backoff with
// full jitter, waited on an injected clock, with one warn line when a run of
// failures begins (then at most one a minute, counting the rest) and one info
// line when it ends.
//
// Full jitter: the wait after the n-th failure in a row is drawn uniformly
// from [0, min(Max, Min·2^(n-1))]. When Redis comes back after an outage, a
// fleet whose processes all failed at the same instant therefore retries
// spread over the whole interval, not in lockstep (a doubling wait without
// jitter sends every process's next attempt at the same moment).
//
// A Backoff belongs to one loop (the goroutine that retries); it is not safe
// for concurrent use.
package retry

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/stargazer/lifecycle/internal/ratelog"
)

// Policy is the shape of the waits: the ceiling of the first wait, and the
// cap of every later one.
type Policy struct {
	Min time.Duration
	Max time.Duration
}

// Default is the policy of the project's Redis loops: the first retry within
// 100ms, none more than 5s after the previous one.
var Default = Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}

// Backoff follows one loop's failures: Failed says how long to wait, Wait
// waits it, Succeeded ends the run.
type Backoff struct {
	policy Policy
	clock  clockwork.Clock
	rand   func() float64
	log    *slog.Logger
	rl     *ratelog.Logger
	what   string

	fails int       // failures in a row; 0 while the loop succeeds
	since time.Time // when the run of failures began
}

// Option configures New.
type Option func(*Backoff)

// WithClock sets the clock the waits and the outage's duration are read on
// (default: the real clock). A nil clock is ignored.
func WithClock(c clockwork.Clock) Option {
	return func(b *Backoff) {
		if c != nil {
			b.clock = c
		}
	}
}

// WithRand sets the source of the jitter: a function returning a float in
// [0, 1), such as (*rand.Rand).Float64 (default: math/rand/v2's Float64,
// which every process seeds differently). A nil f is ignored.
func WithRand(f func() float64) Option {
	return func(b *Backoff) {
		if f != nil {
			b.rand = f
		}
	}
}

// WithLogger sets where the warn and info lines go (default: nowhere). A nil
// logger is ignored.
func WithLogger(l *slog.Logger) Option {
	return func(b *Backoff) {
		if l != nil {
			b.log = l
		}
	}
}

// New returns the backoff of a loop that does what (a short phrase for the
// log lines: "registry writes", "control stream reads"), with policy p. A p
// with a zero Min or Max takes Default's.
func New(what string, p Policy, opts ...Option) *Backoff {
	if p.Min <= 0 {
		p.Min = Default.Min
	}
	if p.Max <= 0 {
		p.Max = Default.Max
	}
	p.Max = max(p.Max, p.Min)
	b := &Backoff{policy: p, what: what, clock: clockwork.NewRealClock(), rand: rand.Float64,
		log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(b)
	}
	b.rl = ratelog.New(b.log, b.clock, ratelog.DefaultInterval)
	return b
}

// Ceiling is the largest wait the next Failed can return: Min·2^n after n
// failures in a row, capped at Max.
func (b *Backoff) Ceiling() time.Duration {
	c := b.policy.Min
	for i := 0; i < b.fails && c < b.policy.Max; i++ {
		c *= 2
	}
	return min(c, b.policy.Max)
}

// Failing reports whether the last attempt failed.
func (b *Backoff) Failing() bool { return b.fails > 0 }

// Failed records a failed attempt and returns the wait before the next one,
// drawn uniformly from [0, Ceiling()]. The first failure of a run is logged
// at warn with err; later ones at most once a minute, with the count of
// those left out.
func (b *Backoff) Failed(ctx context.Context, err error, args ...any) time.Duration {
	ceiling := b.Ceiling()
	wait := time.Duration(b.rand() * float64(ceiling+1))
	if b.fails == 0 {
		b.since = b.clock.Now()
	}
	b.fails++
	attrs := append([]any{"error", err, "retry_in", wait.Round(time.Millisecond)}, args...)
	b.rl.Log(ctx, slog.LevelWarn, b.what+" failing; retrying with backoff", attrs...)
	return wait
}

// Succeeded ends a run of failures, if one was in progress: it logs at info
// that the loop recovered, after how many failures and how long.
func (b *Backoff) Succeeded(ctx context.Context, args ...any) {
	if b.fails == 0 {
		return
	}
	attrs := append([]any{"failures", b.fails, "outage", b.clock.Since(b.since).Round(time.Millisecond)}, args...)
	b.fails = 0
	b.rl.Reset()
	b.log.InfoContext(ctx, b.what+" recovered", attrs...)
}

// Wait waits d on the clock, or until ctx ends; it reports whether the wait
// ran its course.
func (b *Backoff) Wait(ctx context.Context, d time.Duration) bool {
	t := b.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.Chan():
		return true
	case <-ctx.Done():
		return false
	}
}

// Retry records the failure (Failed) and waits the backoff (Wait); it
// reports whether ctx is still live.
func (b *Backoff) Retry(ctx context.Context, err error, args ...any) bool {
	return b.Wait(ctx, b.Failed(ctx, err, args...))
}
