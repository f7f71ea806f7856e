// Package ratelog keeps a repeating failure from flooding a log: the first
// line of a run is written at once, later ones at most once per interval on
// an injected clock, each saying how many were left out since the previous
// one. The registry's heartbeat and the go-redis log routing of Main share it.
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
