// A Registry's options and their defaults.

package registry

import (
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/stargazer/lifecycle/internal/retry"
)

// Defaults applied by New.
const (
	DefaultTTL          = 30 * time.Second
	DefaultEventsMaxLen = 10000
	DefaultQueueSize    = 4096
)

type config struct {
	ttl          time.Duration
	clock        clockwork.Clock
	log          *slog.Logger
	eventsMaxLen int64
	queueSize    int
	retry        retry.Policy   // a Member's writer's
	rand         func() float64 // the jitter's source; nil: math/rand/v2's
	writeTimeout time.Duration
	scriptText   bool // send scripts with their text (EVAL), not by SHA1: tests compare the two
}

// Option configures a Registry.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithTTL sets the entry TTL (default 30s). Values <= 0 are ignored.
func WithTTL(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.ttl = d
		}
	})
}

// WithClock sets the clock used for index scores, timestamps, heartbeat
// ticks and the waits of the retry backoff (default the real clock). Nil is
// ignored.
func WithClock(clk clockwork.Clock) Option {
	return optionFunc(func(c *config) {
		if clk != nil {
			c.clock = clk
		}
	})
}

// WithLogger sets the logger (default slog.Default()). Nil is ignored.
//
// Pass a logger without service or instance attributes: the registry adds
// them, once per line. A Member's lines carry service and instance, added
// with Logger.With when Registry.Member creates it; a Watcher's carry
// service, added when Registry.Watch starts it; the Registry's own lines
// (Register, List) name the key concerned. A logger that already carries
// them prints them twice. The lifecycle passes its logger as it got it,
// before it adds the instance's attributes.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) {
		if l != nil {
			c.log = l
		}
	})
}

// WithEventsMaxLen caps the events stream at about n entries (XADD MAXLEN ~ n;
// default 10000). Redis trims whole stream nodes, so the stream may hold
// somewhat more than n. Values <= 0 are ignored.
func WithEventsMaxLen(n int64) Option {
	return optionFunc(func(c *config) {
		if n > 0 {
			c.eventsMaxLen = n
		}
	})
}

// WithQueueSize bounds each Member's queue of undelivered events (default
// 4096). When the queue is full the oldest event is dropped and counted.
// Values <= 0 are ignored.
func WithQueueSize(n int) Option {
	return optionFunc(func(c *config) {
		if n > 0 {
			c.queueSize = n
		}
	})
}

// WithRetryBackoff sets how long a Member's writer waits after a failed
// write: exponential backoff with full jitter (the project's one retry
// policy, internal/retry). After the n-th failure in a row the wait is drawn
// uniformly from [0, min(max, min·2^(n-1))], so a fleet whose writes all
// failed at one instant (a Redis restart) retries spread over the interval,
// not in lockstep. Defaults 100ms and 5s. Values <= 0 are ignored; max is
// raised to min if lower.
func WithRetryBackoff(min, max time.Duration) Option {
	return optionFunc(func(c *config) {
		if min > 0 {
			c.retry.Min = min
		}
		if max > 0 {
			c.retry.Max = max
		}
		if c.retry.Max < c.retry.Min {
			c.retry.Max = c.retry.Min
		}
	})
}

// WithWriteTimeout bounds each write a Member's own goroutines make (a
// status batch, a heartbeat, a re-registration; default 2s), so a Redis that
// accepts connections but answers nothing never holds them, nor Close and
// Deregister waiting for them, longer than that. The client must honour
// context deadlines (redis.Options.ContextTimeoutEnabled); otherwise its
// read timeout bounds them. Values <= 0 are ignored.
func WithWriteTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.writeTimeout = d
		}
	})
}

// DefaultWriteTimeout bounds a Member's background writes (WithWriteTimeout).
const DefaultWriteTimeout = 2 * time.Second
