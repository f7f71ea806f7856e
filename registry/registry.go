// Package registry is the fleet's Redis service registry: every instance of
// every service keeps one entry saying which lifecycle state it is in, and
// every lifecycle transition is appended to one fleet-wide event stream.
//
// # What it stores
//
//	sg:registry:service:{<name>}:<instance>  string, JSON Entry, TTL = service TTL (default 30s)
//	sg:registry:index:{<name>}               sorted set: instance ids scored by expiry (unix ms)
//	sg:registry:services                     set of service names
//	sg:events                                stream, MAXLEN ~ capped (default 10000), one Event per transition
//
// The {<name>} braces are a Redis Cluster hash tag: one service's entries and
// its index share a slot, so listing a service is one multi-key read on one
// node. The services set and the events stream live in other slots; writes
// that touch them use non-transactional pipelines (a ClusterClient splits a
// pipeline per node), never MULTI. Everything works with a
// redis.UniversalClient: a single server, a failover client or a cluster.
//
// # Consistency
//
// The registry is a soft-state view, not a source of truth:
//   - An entry lives for TTL after its last write or heartbeat. An instance
//     that dies without deregistering disappears within TTL.
//   - Listing never uses SCAN or KEYS: Instances reads the index for
//     members whose expiry is in the future, then MGETs their entries.
//     Index members whose entry vanished (eviction, flush) are skipped, and
//     expired members are trimmed opportunistically by writes and reads.
//   - Index scores are computed from the writer's clock (Option WithClock) and
//     compared with the reader's: the fleet's clocks are assumed to agree to
//     well within the TTL.
//   - Status updates through a Member are asynchronous and coalescing: the
//     entry in Redis converges to the latest status written, intermediate
//     states may never appear in the entry, but every transition is appended
//     to the events stream, in order per instance, at least once (a write
//     retried after a lost reply may duplicate an event).
//   - The services set only grows: it names every service that ever
//     registered; a service without live instances lists no Instances.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"
)

// Keys that are not per service. See EntryKey and IndexKey for the others.
const (
	// ServicesKey is the set of service names that ever registered.
	ServicesKey = "sg:registry:services"
	// EventsKey is the fleet-wide stream of lifecycle transitions.
	EventsKey = "sg:events"
)

// Defaults applied by New.
const (
	DefaultTTL          = 30 * time.Second
	DefaultEventsMaxLen = 10000
	DefaultQueueSize    = 4096
)

// Sentinel errors, for errors.Is.
var (
	// ErrNotFound: the entry does not exist (never registered, deregistered or expired).
	ErrNotFound = errors.New("registry: entry not found")
	// ErrInvalidName: a service or instance name cannot be used in a key.
	ErrInvalidName = errors.New("registry: invalid name")
)

// EntryKey returns the key of one instance's entry:
// "sg:registry:service:{<service>}:<instance>".
func EntryKey(service, instance string) string {
	return "sg:registry:service:{" + service + "}:" + instance
}

// IndexKey returns the key of a service's index of instances:
// "sg:registry:index:{<service>}".
func IndexKey(service string) string {
	return "sg:registry:index:{" + service + "}"
}

// ValidateNames reports whether service and instance can be used in keys:
// both non-empty and free of control characters, and the service free of
// '{' and '}' (they would change the Redis Cluster hash tag). The error names
// the bad input and wraps ErrInvalidName.
func ValidateNames(service, instance string) error {
	if err := validName("service", service); err != nil {
		return err
	}
	if strings.ContainsAny(service, "{}") {
		return fmt.Errorf("%w: service %q: must not contain '{' or '}' (Redis Cluster hash tag)", ErrInvalidName, service)
	}
	return validName("instance", instance)
}

func validName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidName, what)
	}
	if strings.ContainsFunc(name, unicode.IsControl) {
		return fmt.Errorf("%w: %s %q: must not contain control characters", ErrInvalidName, what, name)
	}
	return nil
}

// Entry is one instance's registry entry, stored as JSON under EntryKey.
// Times are written in UTC, RFC 3339 with nanoseconds.
type Entry struct {
	Service  string `json:"service"`
	Instance string `json:"instance"`
	// Status is the lifecycle state name, e.g. "running". Consumers route
	// only to entries whose Status is "running".
	Status string `json:"status"`
	// Phase is the boot or shutdown phase label, e.g. "3", "S1", or "".
	Phase      string    `json:"phase"`
	Host       string    `json:"host"`
	PID        int       `json:"pid"`
	Version    string    `json:"version"`
	StartedAt  time.Time `json:"started_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	Degraded   bool      `json:"degraded"`
	HealthAddr string    `json:"health_addr"`
	// Control says which control ops the instance accepts: "signed" (only
	// ops signed with its key), "insecure" (unsigned ops too) or "disabled"
	// (none); "" when it runs no control-ops daemon.
	Control string `json:"control"`
}

// Event is one lifecycle transition, as an entry of the EventsKey stream.
// In the stream its fields are service, instance, event, from, to, phase,
// degraded ("true"/"false"), time (RFC 3339 nanoseconds, UTC) and, when
// not empty, guard, error and trace_id.
type Event struct {
	// ID is the stream entry id, set when the event was read from Redis.
	ID       string
	Service  string
	Instance string
	Event    string // the event name, e.g. "ping_failed"
	From, To string // state names
	Guard    string // the guard that chose this transition, if any
	Phase    string // the destination's phase label, if any
	Degraded bool
	Time     time.Time
	Error    string // the error that caused the transition, if any
	TraceID  string // W3C trace id of the transition's span, if any
}

// Registry reads and writes the registry. It is safe for concurrent use and
// holds no goroutines; Members do.
type Registry struct {
	c   redis.UniversalClient
	cfg config
}

type config struct {
	ttl          time.Duration
	clock        clockwork.Clock
	log          *slog.Logger
	eventsMaxLen int64
	queueSize    int
	backoffMin   time.Duration
	backoffMax   time.Duration
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
// ticks and retry backoff (default the real clock). Nil is ignored.
func WithClock(clk clockwork.Clock) Option {
	return optionFunc(func(c *config) {
		if clk != nil {
			c.clock = clk
		}
	})
}

// WithLogger sets the logger (default slog.Default()). Nil is ignored.
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
// write: min after the first failure, doubling up to max (defaults 100ms and
// 5s). Values <= 0 are ignored; max is raised to min if lower.
func WithRetryBackoff(min, max time.Duration) Option {
	return optionFunc(func(c *config) {
		if min > 0 {
			c.backoffMin = min
		}
		if max > 0 {
			c.backoffMax = max
		}
		if c.backoffMax < c.backoffMin {
			c.backoffMax = c.backoffMin
		}
	})
}

// New returns a Registry using c. It does not contact Redis.
func New(c redis.UniversalClient, opts ...Option) *Registry {
	cfg := config{
		ttl:          DefaultTTL,
		clock:        clockwork.NewRealClock(),
		log:          slog.Default(),
		eventsMaxLen: DefaultEventsMaxLen,
		queueSize:    DefaultQueueSize,
		backoffMin:   100 * time.Millisecond,
		backoffMax:   5 * time.Second,
	}
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	return &Registry{c: c, cfg: cfg}
}

// TTL returns the entry TTL.
func (r *Registry) TTL() time.Duration { return r.cfg.ttl }

// HeartbeatInterval returns max(1s, TTL/3): a TTL survives two missed beats.
func (r *Registry) HeartbeatInterval() time.Duration { return max(time.Second, r.cfg.ttl/3) }

// Register writes e (Service and Instance must be valid names) with the TTL,
// puts e.Instance in the service's index scored by now+TTL, trims expired
// index members and adds e.Service to the services set, in one pipelined
// round trip. A zero e.UpdatedAt is set to now; times are stored in UTC.
func (r *Registry) Register(ctx context.Context, e Entry) error {
	if err := ValidateNames(e.Service, e.Instance); err != nil {
		return err
	}
	pipe := r.c.Pipeline()
	r.queueEntry(ctx, pipe, r.normalize(e), true)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("registry: registering %s: %w", EntryKey(e.Service, e.Instance), err)
	}
	return nil
}

// normalize sets UpdatedAt when zero and moves the times to UTC.
func (r *Registry) normalize(e Entry) Entry {
	if e.UpdatedAt.IsZero() {
		e.UpdatedAt = r.cfg.clock.Now()
	}
	e.UpdatedAt = e.UpdatedAt.UTC()
	if !e.StartedAt.IsZero() {
		e.StartedAt = e.StartedAt.UTC()
	}
	return e
}

// queueEntry adds the writes of one entry to pipe: SET with TTL, ZADD to the
// index, ZREMRANGEBYSCORE of expired index members and, with addService,
// SADD to the services set. It returns the SET and ZADD commands.
func (r *Registry) queueEntry(ctx context.Context, pipe redis.Pipeliner, e Entry, addService bool) []redis.Cmder {
	now := r.cfg.clock.Now()
	// Entry holds only strings, ints, bools and times: Marshal cannot fail.
	b, _ := json.Marshal(e)
	idx := IndexKey(e.Service)
	set := pipe.Set(ctx, EntryKey(e.Service, e.Instance), b, r.cfg.ttl)
	zadd := pipe.ZAdd(ctx, idx, redis.Z{Score: float64(now.Add(r.cfg.ttl).UnixMilli()), Member: e.Instance})
	pipe.ZRemRangeByScore(ctx, idx, "-inf", strconv.FormatInt(now.UnixMilli(), 10))
	if addService {
		pipe.SAdd(ctx, ServicesKey, e.Service)
	}
	return []redis.Cmder{set, zadd}
}

// heartbeatScript refreshes an entry's TTL and its index score, or, when the
// entry is gone, removes the instance from the index so the index never
// outlives its entry. Both keys share a slot (hash tag).
var heartbeatScript = redis.NewScript(`
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
redis.call('ZREM', KEYS[2], ARGV[3])
return 0
`)

// Heartbeat extends the TTL of an instance's entry and its index score, in
// one round trip (a script on the service's slot). found is false when the
// entry no longer exists (expired, flushed, evicted, Redis restarted); the
// caller should then Register again. Heartbeat never creates an entry.
func (r *Registry) Heartbeat(ctx context.Context, service, instance string) (found bool, err error) {
	if err := ValidateNames(service, instance); err != nil {
		return false, err
	}
	score := r.cfg.clock.Now().Add(r.cfg.ttl).UnixMilli()
	n, err := heartbeatScript.Run(ctx, r.c,
		[]string{EntryKey(service, instance), IndexKey(service)},
		r.cfg.ttl.Milliseconds(), score, instance).Int()
	if err != nil {
		return false, fmt.Errorf("registry: heartbeat of %s: %w", EntryKey(service, instance), err)
	}
	return n == 1, nil
}

// Deregister deletes an instance's entry and removes it from the service's
// index, in one round trip. Deregistering an absent entry is not an error.
// The service stays in the services set (other instances may exist).
func (r *Registry) Deregister(ctx context.Context, service, instance string) error {
	if err := ValidateNames(service, instance); err != nil {
		return err
	}
	pipe := r.c.Pipeline()
	pipe.Del(ctx, EntryKey(service, instance))
	pipe.ZRem(ctx, IndexKey(service), instance)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("registry: deregistering %s: %w", EntryKey(service, instance), err)
	}
	return nil
}

// Instances returns the live entries of service, sorted by instance id. It
// trims expired index members and reads the live ones in one round trip,
// then MGETs their entries (one slot) in a second; entries that vanished in
// between, or whose JSON is unreadable (logged), are skipped. It never uses
// SCAN or KEYS. An unknown service has no instances and no error.
func (r *Registry) Instances(ctx context.Context, service string) ([]Entry, error) {
	if err := validName("service", service); err != nil {
		return nil, err
	}
	now := strconv.FormatInt(r.cfg.clock.Now().UnixMilli(), 10)
	idx := IndexKey(service)
	pipe := r.c.Pipeline()
	pipe.ZRemRangeByScore(ctx, idx, "-inf", now)
	ids := pipe.ZRangeByScore(ctx, idx, &redis.ZRangeBy{Min: "(" + now, Max: "+inf"})
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("registry: reading index %s: %w", idx, err)
	}
	if len(ids.Val()) == 0 {
		return nil, nil
	}
	keys := make([]string, len(ids.Val()))
	for i, id := range ids.Val() {
		keys[i] = EntryKey(service, id)
	}
	vals, err := r.c.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("registry: reading entries of service %q: %w", service, err)
	}
	out := make([]Entry, 0, len(vals))
	for i, v := range vals {
		s, ok := v.(string)
		if !ok { // nil: the entry expired or was evicted after the index read
			continue
		}
		var e Entry
		if err := json.Unmarshal([]byte(s), &e); err != nil {
			r.cfg.log.Warn("registry: skipping unreadable entry", "key", keys[i], "err", err)
			continue
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Instance, b.Instance) })
	return out, nil
}

// Services returns the names of all services that ever registered, sorted.
func (r *Registry) Services(ctx context.Context) ([]string, error) {
	names, err := r.c.SMembers(ctx, ServicesKey).Result()
	if err != nil {
		return nil, fmt.Errorf("registry: reading %s: %w", ServicesKey, err)
	}
	slices.Sort(names)
	return names, nil
}

// Entry returns one instance's entry, or an error wrapping ErrNotFound.
func (r *Registry) Entry(ctx context.Context, service, instance string) (Entry, error) {
	if err := ValidateNames(service, instance); err != nil {
		return Entry{}, err
	}
	key := EntryKey(service, instance)
	s, err := r.c.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return Entry{}, fmt.Errorf("registry: %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("registry: reading %s: %w", key, err)
	}
	var e Entry
	if err := json.Unmarshal([]byte(s), &e); err != nil {
		return Entry{}, fmt.Errorf("registry: decoding %s: %w", key, err)
	}
	return e, nil
}
