// The checks: their cached results, the background refresher that runs
// them, and Refresh.

package health

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// check is a registered check and its cached result.
type check struct {
	name          string
	fn            CheckFunc
	componentType string
	passOutput    string
	required      bool
	redis         bool
	every         time.Duration // the refresher runs it about this often while it passes; 0: every round
	inflight      atomic.Bool   // a run is in progress: Refresh does not start another

	mu   sync.Mutex
	last result
}

type result struct {
	done     bool // false until the first run finished
	err      error
	duration time.Duration
	at       time.Time
}

func (s *Server) refreshLoop() {
	t := s.cfg.clock.NewTicker(s.cfg.interval)
	defer t.Stop()
	for {
		select {
		case <-s.life.Done():
			return
		case <-t.Chan():
			s.refresh(s.life, true)
		}
	}
}

// due reports whether the refresher runs c in the round at now: every round
// unless c has an interval of its own (Every); then when that much time has
// passed since its last run (within half a round, so that a 30s check on a 5s
// refresher runs every 30s, not 35s), and every round while it fails or has
// not passed yet, so that a recovery shows within one round.
func (s *Server) due(c *check, now time.Time) bool {
	if c.every <= 0 {
		return true
	}
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	return !last.done || last.err != nil || now.Sub(last.at)+s.cfg.interval/2 >= c.every
}

// Refresh runs every check now, concurrently, each bounded by the check
// timeout and by ctx, and returns when all have reported or timed out. A
// check still running from an earlier round is not started again. Tests call
// it instead of waiting for the interval; after Shutdown it does nothing.
// (The background refresher runs a check that has an interval of its own,
// Every, only when it is due.)
func (s *Server) Refresh(ctx context.Context) { s.refresh(ctx, false) }

// refresh runs the checks, all of them or, with dueOnly, those due now.
func (s *Server) refresh(ctx context.Context, dueOnly bool) {
	type run struct {
		c      *check
		done   chan error
		start  time.Time
		cancel context.CancelFunc
		ctx    context.Context
	}
	var runs []run
	s.mu.Lock()
	if s.state == stateClosed {
		s.mu.Unlock()
		return
	}
	now := s.cfg.clock.Now()
	for _, c := range s.cfg.checks {
		if dueOnly && !s.due(c, now) {
			continue
		}
		if !c.inflight.CompareAndSwap(false, true) {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, s.cfg.checkTimeout)
		stop := context.AfterFunc(s.life, cancel)
		r := run{c: c, done: make(chan error, 1), start: s.cfg.clock.Now(), ctx: cctx,
			cancel: func() { stop(); cancel() }}
		s.wg.Go(func() {
			err := runCheck(cctx, c.fn)
			// Not in flight any more before the round learns the result, so the
			// next round (which may start as soon as this one returns) runs it.
			c.inflight.Store(false)
			r.done <- err
		})
		runs = append(runs, r)
	}
	s.mu.Unlock()

	for _, r := range runs {
		var err error
		select {
		case err = <-r.done:
		case <-r.ctx.Done():
			// The check ignores its context: record the timeout, leave it to
			// finish on its own (Shutdown awaits it).
			err = fmt.Errorf("check %q did not return within %v: %w", r.c.name, s.cfg.checkTimeout, r.ctx.Err())
		}
		r.cancel()
		now := s.cfg.clock.Now()
		s.record(r.c, result{done: true, err: err, duration: now.Sub(r.start), at: now})
	}
}

// runCheck calls fn, turning a panic in it into a failed check rather than a
// crashed process.
func runCheck(ctx context.Context, fn CheckFunc) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("check panicked: %v", v)
		}
	}()
	return fn(ctx)
}

func (s *Server) record(c *check, r result) {
	c.mu.Lock()
	prev := c.last
	c.last = r
	c.mu.Unlock()
	if prev.done && (prev.err == nil) == (r.err == nil) {
		return
	}
	if r.err != nil {
		s.cfg.log.Warn("health check failing", "check", c.name, "required", c.required, "error", r.err)
	} else if prev.done {
		s.cfg.log.Info("health check passing", "check", c.name)
	}
}
