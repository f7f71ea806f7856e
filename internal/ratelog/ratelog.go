// Package ratelog keeps a repeating failure from flooding a log: the first
// line of a run is written at once, later ones at most once per interval on
// an injected clock, each saying how many were left out since the previous
// one. The registry's heartbeat and the go-redis log routing of Main share it.
// Keyed does the same per key, for lines about many things at once (the
// registry entries a reader skips), remembering a bounded number of keys.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// DefaultInterval is the interval the library uses: the first failure, then
// at most one line a minute.
const DefaultInterval = time.Minute

// SuppressedKey is the attribute that counts the lines left out since the
// previous line written, added when it is not zero.
const SuppressedKey = "suppressed"

// Logger writes through a slog.Logger at most once per interval. It is safe
// for concurrent use.
type Logger struct {
	log   *slog.Logger
	clock clockwork.Clock
	every time.Duration

	mu         sync.Mutex
	wrote      bool
	last       time.Time
	suppressed int
}

// New returns a Logger writing to log, at most once per every on clock (the
// real clock when nil).
func New(log *slog.Logger, clock clockwork.Clock, every time.Duration) *Logger {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Logger{log: log, clock: clock, every: every}
}

// Log writes msg with args at level when it is the first line since New or
// Reset, or when the last line written is at least the interval old;
// otherwise it only counts the line. It reports whether it wrote.
func (l *Logger) Log(ctx context.Context, level slog.Level, msg string, args ...any) bool {
	l.mu.Lock()
	now := l.clock.Now()
	if l.wrote && now.Sub(l.last) < l.every {
		l.suppressed++
		l.mu.Unlock()
		return false
	}
	n := l.suppressed
	l.wrote, l.last, l.suppressed = true, now, 0
	l.mu.Unlock()
	if n > 0 {
		args = append(args, SuppressedKey, n)
	}
	l.log.Log(ctx, level, msg, args...)
	return true
}

// Reset ends a run (the failure stopped): the next line is written at once.
// It returns how many lines were left out since the last one written, so
// the caller can say so when it reports the recovery.
func (l *Logger) Reset() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.suppressed
	l.wrote, l.suppressed = false, 0
	return n
}

// Keyed rate-limits lines about many things, each of which may repeat (one
// line per bad registry key, say): the first line for a key is allowed at
// once, later ones at most once per interval, each saying how many of that
// key's were left out. It remembers at most a bounded number of keys, so
// that whoever chooses the keys (anyone who can write to Redis) cannot grow
// it: when it is full, keys whose last line is an interval old or more are
// forgotten (with their count of lines left out), and if none is, every new
// key shares one budget (one line per interval for all of them). It is safe
// for concurrent use.
type Keyed struct {
	clock clockwork.Clock
	every time.Duration
	max   int

	mu       sync.Mutex
	keys     map[string]*keyState
	overflow keyState // the budget new keys share while keys is full
}

type keyState struct {
	wrote      bool
	last       time.Time
	suppressed int
}

// allow reports whether a line is allowed now, and how many were left out
// since the last one allowed.
func (s *keyState) allow(now time.Time, every time.Duration) (bool, int) {
	if s.wrote && now.Sub(s.last) < every {
		s.suppressed++
		return false, 0
	}
	n := s.suppressed
	s.wrote, s.last, s.suppressed = true, now, 0
	return true, n
}

// NewKeyed returns a Keyed allowing one line per key per every on clock
// (the real clock when nil), remembering at most keys keys (at least 1).
func NewKeyed(clock clockwork.Clock, every time.Duration, keys int) *Keyed {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Keyed{clock: clock, every: every, max: max(1, keys), keys: map[string]*keyState{}}
}

// Allow reports whether a line about key may be written now and, when it
// may, how many lines about it were left out since the previous one (to be
// logged under SuppressedKey). A key first seen while the Keyed is full of
// keys allowed within the interval is counted against the shared budget.
func (k *Keyed) Allow(key string) (ok bool, suppressed int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.clock.Now()
	s, found := k.keys[key]
	if !found {
		if len(k.keys) >= k.max {
			for kk, ks := range k.keys {
				if now.Sub(ks.last) >= k.every {
					delete(k.keys, kk)
				}
			}
		}
		if len(k.keys) >= k.max {
			return k.overflow.allow(now, k.every)
		}
		s = &keyState{}
		k.keys[key] = s
	}
	return s.allow(now, k.every)
}
