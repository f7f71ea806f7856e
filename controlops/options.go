package controlops

import (
	"log/slog"
	"time"

	"github.com/jonboulle/clockwork"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle/internal/retry"
)

// Defaults: of the options, and the fixed values that no option sets
// (DefaultMaxSkew, DefaultResultsMaxLen, DefaultStreamMaxLen, DefaultSlotTTL,
// DefaultHandlerTimeout).
const (
	DefaultTTL            = 30 * time.Second // Client: ttl_ms of the ops it sends
	DefaultMaxSkew        = 5 * time.Second  // Daemon: clock disagreement allowed around the window
	DefaultBlock          = 30 * time.Second // Daemon: XREAD BLOCK through a reader of its own, which Stop closes
	DefaultSharedBlock    = time.Second      // Daemon: how often it polls its stream through a client it cannot copy
	DefaultBackoffMin     = 100 * time.Millisecond
	DefaultBackoffMax     = 5 * time.Second
	DefaultResultsMaxLen  = 10000           // results stream, MAXLEN ~
	DefaultStreamMaxLen   = 10000           // op stream, MAXLEN ~ (Client)
	DefaultSlotTTL        = 2 * time.Minute // Daemon: a rolling-restart slot and the hand-over last this long unless the new process releases them
	DefaultSlotPoll       = 200 * time.Millisecond
	DefaultSlotWait       = 10 * time.Minute
	DefaultHandlerTimeout = 5 * time.Minute // Daemon: how long Target.Do may run
	DefaultCallTimeout    = 2 * time.Second // Daemon: one Redis call made while handling an op
)

// ScopeName is the instrumentation scope of the package's spans.
const ScopeName = "github.com/stargazer/lifecycle/controlops"

// Option configures a Client or a Daemon. Each says which it applies to; the
// other ignores it.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	keys           [][]byte // the first signs; all verify
	insecure       bool
	notBefore      time.Time // zero: when New was called
	handed         []HandedNonce
	replayMemory   int
	clock          clockwork.Clock
	log            *slog.Logger
	tp             trace.TracerProvider
	mp             metric.MeterProvider
	ttl            time.Duration
	skew           time.Duration
	block          time.Duration
	backoff        retry.Policy
	rand           func() float64 // the backoff's jitter; nil: math/rand/v2 (tests set it)
	resultsMaxLen  int64
	streamMaxLen   int64
	slotTTL        time.Duration
	slotPoll       time.Duration
	slotWait       time.Duration
	handlerTimeout time.Duration
	callTimeout    time.Duration
	pid            int
}

func newConfig(opts []Option) config {
	c := config{
		clock:          clockwork.NewRealClock(),
		log:            slog.Default(),
		tp:             otel.GetTracerProvider(),
		mp:             otel.GetMeterProvider(),
		replayMemory:   DefaultReplayMemory,
		ttl:            DefaultTTL,
		skew:           DefaultMaxSkew,
		backoff:        retry.Policy{Min: DefaultBackoffMin, Max: DefaultBackoffMax},
		resultsMaxLen:  DefaultResultsMaxLen,
		streamMaxLen:   DefaultStreamMaxLen,
		slotTTL:        DefaultSlotTTL,
		slotPoll:       DefaultSlotPoll,
		slotWait:       DefaultSlotWait,
		handlerTimeout: DefaultHandlerTimeout,
		callTimeout:    DefaultCallTimeout,
	}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	return c
}

// WithKey sets one HMAC-SHA256 key: WithKeys(key).
func WithKey(key []byte) Option { return WithKeys(key) }

// WithKeys sets the HMAC-SHA256 keys (SG_CONTROL_KEY, see ParseKeys). Client:
// ops are signed with the first. Daemon: every entry must be signed with one
// of them, fresh, not stale, and carry an unused nonce; results name the key
// that verified it by its KeyID. Empty keys are dropped. Without a key the
// client sends unsigned ops, and the daemon rejects every op unless
// WithInsecure is given.
func WithKeys(keys ...[]byte) Option {
	return optionFunc(func(c *config) {
		c.keys = nil
		for _, k := range keys {
			if len(k) > 0 {
				c.keys = append(c.keys, append([]byte(nil), k...))
			}
		}
	})
}

// WithInsecure makes a Daemon without a key accept unsigned ops
// (SG_CONTROL_INSECURE=true): anyone who can write to the service's stream in
// Redis can then restart it. A Daemon with a key ignores it and requires
// signed ops. Without a key and without WithInsecure, every op is rejected.
func WithInsecure() Option {
	return optionFunc(func(c *config) { c.insecure = true })
}

// WithNotBefore sets the Daemon's not-before time: ops issued before t, by
// more than the skew, are rejected as stale. The default is when New is
// called, which the lifecycle makes the process's start. A zero t is ignored.
func WithNotBefore(t time.Time) Option {
	return optionFunc(func(c *config) {
		if !t.IsZero() {
			c.notBefore = t
		}
	})
}

// WithHandOver makes a Daemon continue where the previous process of its
// instance stopped (see HandOver): its not-before time is h.NotBefore and it
// remembers h.Nonces. A zero NotBefore keeps the default.
func WithHandOver(h HandOver) Option {
	return optionFunc(func(c *config) {
		if !h.NotBefore.IsZero() {
			c.notBefore = h.NotBefore
		}
		c.handed = append([]HandedNonce(nil), h.Nonces...)
	})
}

// WithReplayMemory sets how many nonces a Daemon remembers at most (default
// DefaultReplayMemory). Values <= 0 are ignored.
func WithReplayMemory(n int) Option {
	return optionFunc(func(c *config) {
		if n > 0 {
			c.replayMemory = n
		}
	})
}

// WithMeterProvider sets where the Daemon's metrics go (default: the global
// provider). A nil mp is ignored.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) {
		if mp != nil {
			c.mp = mp
		}
	})
}

// WithClock sets the clock (issued_at, freshness, backoff, slot polling). Tests
// use a fake one. A nil clock is ignored.
func WithClock(clock clockwork.Clock) Option {
	return optionFunc(func(c *config) {
		if clock != nil {
			c.clock = clock
		}
	})
}

// WithLogger sets the logger (default slog.Default()). A nil logger is ignored.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) {
		if l != nil {
			c.log = l
		}
	})
}

// WithTracerProvider sets where spans go (default: the global provider). A nil
// tp is ignored.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) {
		if tp != nil {
			c.tp = tp
		}
	})
}

// WithTTL sets the ttl_ms of the ops a Client sends (default 30s, at most
// MaxTTL). Values <= 0 are ignored.
func WithTTL(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.ttl = min(d, MaxTTL)
		}
	})
}

// WithBlock sets the Daemon's XREAD BLOCK time. The default is DefaultBlock
// (30s) when the daemon reads through a client of its own (it copies a
// *redis.Client, failover clients included, or a *redis.ClusterClient), which
// Stop closes to end a blocked read at once. An op is read as soon as it is
// added, whatever the block; a longer block only means fewer XREADs on an idle
// stream (one per block), and a longer wait to notice a connection that died
// silently (the block plus go-redis's 10s margin). Through any other client
// the daemon cannot guard a blocking read against entries of any size (see
// the package documentation): it polls with a script instead, every block,
// DefaultSharedBlock (1s) by default, so an op waits up to the block there.
// Values <= 0 are ignored.
func WithBlock(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.block = d
		}
	})
}

// WithBackoff sets the Daemon's retry policy after a Redis error, the
// project's one (exponential backoff with full jitter): the wait after the
// n-th failure in a row is drawn uniformly from [0, min(max, min·2^(n-1))]
// (default 100ms to 5s), so instances that failed together do not retry
// together. Invalid pairs are ignored.
func WithBackoff(min, max time.Duration) Option {
	return optionFunc(func(c *config) {
		if min > 0 && max >= min {
			c.backoff = retry.Policy{Min: min, Max: max}
		}
	})
}

// WithSlotWait bounds how long a Daemon waits for a rolling-restart slot, polling
// every poll (default 10m, polling every 200ms); then the restart fails. Values
// <= 0 are ignored.
func WithSlotWait(wait, poll time.Duration) Option {
	return optionFunc(func(c *config) {
		if wait > 0 {
			c.slotWait = wait
		}
		if poll > 0 {
			c.slotPoll = poll
		}
	})
}

// WithCallTimeout bounds each Redis call the Daemon makes while it handles an
// op or completes a restart (claiming a nonce, taking a slot, writing a
// result; default 2s), so a Redis that stops answering never holds a handler,
// nor Stop waiting for it, longer than that. The client must honour context
// deadlines (redis.Options.ContextTimeoutEnabled); otherwise its read timeout
// bounds the calls. Values <= 0 are ignored.
func WithCallTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.callTimeout = d
		}
	})
}
