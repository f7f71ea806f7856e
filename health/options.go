package health

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
)

// Defaults.
const (
	// DefaultAddr is the address the server listens on without WithAddr
	// (SG_HEALTH_PORT's default port, all interfaces).
	DefaultAddr = ":9090"
	// DefaultInterval is how often the background refresher runs the checks.
	DefaultInterval = 5 * time.Second
	// DefaultRedisInterval is how often the refresher runs the Redis check
	// while it passes (WithRedisInterval); it runs every round while it fails.
	DefaultRedisInterval = 30 * time.Second
	// DefaultCheckTimeout bounds one run of one check.
	DefaultCheckTimeout = time.Second
	// DefaultStuckAfter is how long an instance may stay in one working
	// state (phases.RoleWorking: a boot phase or a shutdown step) before
	// /livez calls it wedged.
	DefaultStuckAfter = 5 * time.Minute
	// DefaultReadTimeout bounds reading one request, headers included (the
	// headers alone get at most 5s).
	DefaultReadTimeout = 10 * time.Second
	// DefaultIdleTimeout is how long a keep-alive connection may wait for
	// its next request before the server closes it.
	DefaultIdleTimeout = 30 * time.Second
)

// RedisCheck is the name under which WithRedis registers its check, in the
// draft-inadarei "component:measurement" form.
const RedisCheck = "redis:ping"

// Option configures a Server. Options that receive a nil value (a nil logger,
// clock, handler, check function or pinger) are ignored.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	addr          string
	interval      time.Duration
	redisInterval time.Duration
	checkTimeout  time.Duration
	stuckAfter    time.Duration
	readTimeout   time.Duration
	idleTimeout   time.Duration
	clock         clockwork.Clock
	log           *slog.Logger
	checks        []*check
	handlers      []mount
	showAddrs     bool // WithAddresses
}

type mount struct {
	pattern string
	h       http.Handler
}

func newConfig(opts []Option) config {
	c := config{
		addr:          DefaultAddr,
		interval:      DefaultInterval,
		redisInterval: DefaultRedisInterval,
		checkTimeout:  DefaultCheckTimeout,
		stuckAfter:    DefaultStuckAfter,
		readTimeout:   DefaultReadTimeout,
		idleTimeout:   DefaultIdleTimeout,
		clock:         clockwork.NewRealClock(),
		log:           slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	return c
}

// WithAddr sets the listen address, "host:port" with a numeric port in
// [0, 65535]; port 0 picks a free one (see Server.Addr). Default ":9090".
func WithAddr(addr string) Option {
	return optionFunc(func(c *config) { c.addr = addr })
}

// WithInterval sets how often the background refresher runs the checks.
// Values <= 0 are ignored. Default 5s.
func WithInterval(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.interval = d
		}
	})
}

// WithRedisInterval sets how often the refresher runs the Redis check
// (WithRedis) while it passes; while it fails, or before it first passed, it
// runs every round (WithInterval). d at most the refresh interval runs it
// every round. Values <= 0 are ignored. Default 30s.
func WithRedisInterval(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.redisInterval = d
		}
	})
}

// WithCheckTimeout bounds one run of one check: its context is cancelled after
// d and the check is recorded as failing. Values <= 0 are ignored. Default 1s.
func WithCheckTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.checkTimeout = d
		}
	})
}

// WithStuckAfter sets when an instance counts as wedged: it has stayed longer
// than d in one working state (phases.RoleWorking, or a Snapshot without a
// Role: a boot phase or a shutdown step). Serving, draining, stopped and
// failed states are never wedged. A wedged instance fails /livez so that its
// supervisor restarts it. d <= 0 turns wedge detection off. Default 5m.
func WithStuckAfter(d time.Duration) Option {
	return optionFunc(func(c *config) { c.stuckAfter = d })
}

// WithReadTimeout bounds reading one request, headers and body; the headers
// alone get at most 5s. A client that sends nothing, or sends slowly, has its
// connection closed. Values <= 0 are ignored. Default 10s.
func WithReadTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.readTimeout = d
		}
	})
}

// WithIdleTimeout sets how long a keep-alive connection may stay idle between
// requests before the server closes it, so probes and scrapers that keep
// connections open do not hold them (and a goroutine each) for ever. Values
// <= 0 are ignored. Default 30s.
func WithIdleTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.idleTimeout = d
		}
	})
}

// WithClock sets the clock behind the refresh interval, the check timestamps
// and wedge detection. Default: the real clock.
func WithClock(clock clockwork.Clock) Option {
	return optionFunc(func(c *config) {
		if clock != nil {
			c.clock = clock
		}
	})
}

// WithLogger sets the logger for listener events and check status changes.
// Default: discard.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) {
		if l != nil {
			c.log = l
		}
	})
}

// WithHandler mounts h on the server's mux at pattern (net/http ServeMux
// syntax), for extra endpoints such as /debug/lifecycle. A pattern that
// conflicts with another makes New fail, naming the pattern.
func WithHandler(pattern string, h http.Handler) Option {
	return optionFunc(func(c *config) {
		if h != nil {
			c.handlers = append(c.handlers, mount{pattern, h})
		}
	})
}

// CheckFunc reports a dependency's health: nil is pass, an error is fail (its
// text becomes the check's output). It must return once ctx is done.
type CheckFunc func(ctx context.Context) error

// CheckOption configures one check registered by WithCheck.
type CheckOption func(*check)

// Required marks a check as required: while it fails /readyz answers 503 and
// /healthz reports fail. A check that is not required only makes /healthz warn.
func Required() CheckOption {
	return func(c *check) { c.required = true }
}

// FollowsRedisRequired makes a check required exactly when Redis is (the
// StateSource reports RedisRequired), as the redis:ping check of WithRedis
// is: for a check of something the instance does in Redis.
func FollowsRedisRequired() CheckOption {
	return func(c *check) { c.redis = true }
}

// ComponentType sets the check's componentType in the body ("datastore",
// "component", "system", ...). Default "component".
func ComponentType(t string) CheckOption {
	return func(c *check) { c.componentType = t }
}

// Every makes the background refresher run the check about every d while it
// passes, instead of every round; while it fails, or before it first passed,
// it runs every round, so a recovery shows at once. Refresh runs it whatever
// d. For checks that cost their dependency something, such as a ping of a
// shared server. d <= 0 keeps every round.
func Every(d time.Duration) CheckOption {
	return func(c *check) { c.every = max(d, 0) }
}

// PassOutput sets the output the check reports while it passes (default
// none), for a check that is healthy but has something to say, such as a
// feature turned off on purpose.
func PassOutput(text string) CheckOption {
	return func(c *check) { c.passOutput = text }
}

// WithCheck registers fn under name, the key in the body's "checks" map
// ("component:measurement", e.g. "postgres:ping"). Names must be unique and
// non-empty; New reports the offending name otherwise.
func WithCheck(name string, fn CheckFunc, opts ...CheckOption) Option {
	return optionFunc(func(c *config) {
		if fn == nil {
			return
		}
		ch := &check{name: name, fn: fn, componentType: "component"}
		for _, o := range opts {
			if o != nil {
				o(ch)
			}
		}
		c.checks = append(c.checks, ch)
	})
}

// Pinger is the part of a go-redis client WithRedis uses;
// redis.UniversalClient satisfies it.
type Pinger interface {
	Ping(ctx context.Context) *redis.StatusCmd
}

// WithRedis registers the "redis:ping" check (componentType "datastore") that
// sends PING through p, every 30s while it passes and every round while it
// fails (WithRedisInterval). When required is true (or the StateSource
// reports RedisRequired) a failing ping makes /readyz answer 503 and /healthz
// fail; otherwise it only makes /healthz warn.
func WithRedis(p Pinger, required bool) Option {
	return optionFunc(func(c *config) {
		if p == nil {
			return
		}
		c.checks = append(c.checks, &check{
			name:          RedisCheck,
			fn:            func(ctx context.Context) error { return p.Ping(ctx).Err() },
			componentType: "datastore",
			required:      required,
			redis:         true,
		})
	})
}

// WithAddresses(true) lets /healthz and /readyz show the network addresses
// in the outputs of failing checks, as their errors hold them ("dial tcp
// 10.0.0.5:6379: connect: connection refused"). By default each address
// (IPv4, IPv6, a host name with a port, the name a lookup or a certificate
// failed for) is written AddrHidden: a health endpoint is often reachable
// by more than the people who need to know where Redis is.
func WithAddresses(show bool) Option {
	return optionFunc(func(c *config) { c.showAddrs = show })
}
