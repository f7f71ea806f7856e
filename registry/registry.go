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
//
// # Ownership
//
// Every entry carries an owner token: random, one per process (per Member).
// A Member's first entry write that reaches Redis takes the entry over,
// whatever it held: the entry of a crashed predecessor, or of the process
// this one replaced by exec (a restart keeps the pid and the instance id), is
// normal. Every later write, heartbeat and delete of that Member is a
// compare-and-set on the token: a Lua script on the service's slot (the
// entry and the index share the hash tag, so it runs on Redis Cluster), one
// round trip per write; the events XADD and the services SADD live in other
// slots and stay separate commands of the same pipeline. A Member that finds
// another token has met a second process running with its instance id: it
// logs one error naming both processes (host, pid), reports it by
// Member.Conflict (the lifecycle shows it as the registry:identity check,
// warn, on /healthz), and never writes or deletes the entry again, so
// stopping either process never removes the other's entry. Its events still
// reach the stream. Registry.Register, Heartbeat and Deregister are
// unconditional: they are for tools and tests.
//
// # Outages and foreign data
//
// Status updates are retried by the Member's writer until Redis answers
// (warn once per outage); heartbeat failures are logged at warn, the first
// at once and then at most one a minute with the count left out. A heartbeat
// that finds the entry gone (restart, FLUSHALL, eviction), not a JSON object,
// or under a key of the wrong type rewrites it. The registry's keys are the
// registry's by contract: a write that finds an entry, index or services key
// of the wrong type deletes it and writes its own, logging the key and the
// type it found at warn. Readers never fail a listing for one bad entry:
// Instances skips (and logs, naming the key) entries that are not JSON or not
// strings.
//
// # Listing and watching a service
//
// List is the one listing of a service: its live entries with their expiry
// times (the index scores). Instances, sgctl ps and the dashboard read
// through it, and so does a Watcher's resync.
//
// A Watcher (Registry.Watch) is a live view of one service's instances whose
// status is running, the one status consumers route to; package balancer
// sends HTTP requests to them. It keeps the view from two sources:
//   - the sg:events stream, through one blocking XREAD at a time resuming
//     from the last id read: an event to running adds the instance once one
//     pipelined GET of its entry and ZSCORE of its index member confirm it
//     (the entry says where to call it, Entry.Addr); an event to any other
//     state (pulling, draining, stopping_daemons, ...) removes it. A change
//     reaches the view within one event's delivery: a few milliseconds.
//   - resyncs from List: at start, after a failed read or resync (a
//     reconnect), every TTL, and a quarter TTL before the known expiry of a
//     running instance, so that its heartbeats are seen before the expiry.
//     A resync first reads the stream's last id, then the listing: every
//     event up to that id is in the listing (a Member writes an entry before
//     its event, in one pipeline), so the reads go on after it. A resync
//     repairs what events cannot tell: a missed event, a FLUSHALL, a Redis
//     restart or failover (the new stream's ids need not follow the old
//     ones), an entry that left running without one.
//
// Consistency: the view never holds an instance past its entry's known
// expiry. Watcher.Running leaves out instances whose Expires has passed even
// before the goroutine publishes the pruned view; an instance that stops
// heartbeating leaves at its expiry, within one TTL of its last heartbeat.
// An instance the listing lacks although its expiry has not passed (its
// entry was flushed or evicted, or Redis restarted empty) stays until that
// expiry, and the next resync comes within a heartbeat interval, by when a
// live instance has written its entry again.
//
// Outages: a failed read or resync makes the view not Connected (View.At
// says since when); the Watcher retries with capped backoff (100ms to 5s)
// and resyncs once Redis answers. Meanwhile the view keeps each running
// instance until its known expiry, and no longer: an outage longer than the
// TTL empties it, because the registry can no longer vouch for any
// instance. Reads of the view are an atomic load of an immutable View and
// never wait on Redis.
//
// # Failover
//
// Behind a Sentinel (a go-redis failover client) a write after the promotion
// reaches the new master: the client asks the Sentinel where it is. On Redis
// Cluster, go-redis would keep sending a dead master's slots to its address
// until its periodic slot-map reload, a minute later; so every write,
// heartbeat and read that fails with a network error, MOVED, CLUSTERDOWN or
// READONLY asks the client to reload its map at once (at most twice a second
// per client), and a heartbeat that failed so is retried once, half a second
// later, by the new map. An instance is back on the promoted replica within
// one heartbeat of the promotion. Scripts go by SHA1 (EVALSHA); a promoted
// replica, like a restarted Redis, does not have them: the first write sends
// their text again.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/fleetenv"
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

// ValidateNames reports whether service and instance can be used in keys,
// by the fleet's naming rules (fleetenv.ValidateService and
// ValidateInstance: no braces, which would change the Redis Cluster hash
// tag, no colons, no control characters). The error names the bad input and
// wraps ErrInvalidName.
func ValidateNames(service, instance string) error {
	if err := fleetenv.ValidateService(service); err != nil {
		return fmt.Errorf("%w: service %q: %v", ErrInvalidName, service, err)
	}
	if err := fleetenv.ValidateInstance(instance); err != nil {
		return fmt.Errorf("%w: instance %q: %v", ErrInvalidName, instance, err)
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
	Phase string `json:"phase"`
	// Error says why the instance is failing: set on the entries written
	// while a failed boot or run unwinds and on a failed entry (a phase past
	// its time limit names the phase, its budget and the time spent). Empty,
	// and left out of the JSON, otherwise.
	Error      string    `json:"error,omitempty"`
	Host       string    `json:"host"`
	PID        int       `json:"pid"`
	Version    string    `json:"version"`
	StartedAt  time.Time `json:"started_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	Degraded   bool      `json:"degraded"`
	HealthAddr string    `json:"health_addr"`
	// Addr is where clients call the instance, "host:port", when it
	// advertises one (lifecycle.WithAdvertiseAddr, SG_ADVERTISE_ADDR, or
	// the address its Service bound); empty, and left out of the JSON,
	// otherwise. A Watcher's balancer routes to it.
	Addr string `json:"addr,omitempty"`
	// Owner is the random token of the process that wrote the entry (a
	// Member sets it). See "Ownership" in the package documentation.
	Owner string `json:"owner"`
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
	// sentText says, per pipelined script, whether this registry sent its
	// text once (newCall).
	sentText map[*redis.Script]*atomic.Bool
	// cluster says c is a cluster client, whose pipelines run each node's
	// commands concurrently: writes whose order matters go in turn.
	cluster bool
}

type config struct {
	ttl          time.Duration
	clock        clockwork.Clock
	log          *slog.Logger
	eventsMaxLen int64
	queueSize    int
	backoffMin   time.Duration
	backoffMax   time.Duration
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
		writeTimeout: DefaultWriteTimeout,
	}
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	_, cluster := c.(*redis.ClusterClient)
	return &Registry{c: c, cfg: cfg, cluster: cluster, sentText: map[*redis.Script]*atomic.Bool{
		entryScript: new(atomic.Bool), servicesScript: new(atomic.Bool)}}
}

// TTL returns the entry TTL.
func (r *Registry) TTL() time.Duration { return r.cfg.ttl }

// HeartbeatInterval returns max(1s, TTL/3): a TTL survives two missed beats.
func (r *Registry) HeartbeatInterval() time.Duration { return max(time.Second, r.cfg.ttl/3) }

// Register writes e (Service and Instance must be valid names) with the TTL,
// puts e.Instance in the service's index scored by now+TTL, trims expired
// index members and adds e.Service to the services set, in one pipelined
// round trip. A zero e.UpdatedAt is set to now; times are stored in UTC.
//
// Register takes the entry over whoever wrote it, with e.Owner as given; it
// is for tools and tests. A process registers through a Member, whose later
// writes are compare-and-set on its owner token. Keys of the wrong type are
// replaced and logged, as a Member's writes do.
func (r *Registry) Register(ctx context.Context, e Entry) error {
	if err := ValidateNames(e.Service, e.Instance); err != nil {
		return err
	}
	pipe := r.c.Pipeline()
	w := r.queueEntry(ctx, pipe, r.normalize(e), true, false)
	if cmds, err := r.exec(ctx, pipe, w.calls()...); err != nil {
		return fmt.Errorf("registry: registering %s: %w", EntryKey(e.Service, e.Instance), cmdError(cmds, err))
	}
	r.reportFixes(w, e.Service, e.Instance)
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

// entryScript writes one entry (KEYS[1]) and its index member (KEYS[2]):
// SET with PX TTL, ZADD, and ZREMRANGEBYSCORE of the expired members, in one
// round trip on the service's slot (both keys carry its hash tag).
//
// ARGV: 1 the entry JSON, 2 the TTL in ms, 3 the index score, 4 the instance
// id, 5 now in unix ms (members scored up to it are trimmed), 6 the writer's
// owner token, 7 "cas" or "take". With "cas" an entry that decodes to a JSON
// object whose owner is not ARGV[6] is left alone: the script returns
// {0, 'entry', <that entry>}. Anything else is written over, and the script
// returns {1, <what was there>, <its text>, [<index type>]}, where what was
// there is 'none', 'entry', 'unparsable' or the type of a key that was not a
// string (then deleted first); the fourth element is the type of an index
// key that was not a sorted set (deleted first).
var entryScript = redis.NewScript(`
local st, prev = 'none', ''
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'string' then
  prev = redis.call('GET', KEYS[1])
  local ok, e = pcall(cjson.decode, prev)
  if ok and type(e) == 'table' then
    st = 'entry'
    if ARGV[7] == 'cas' and e['owner'] ~= ARGV[6] then
      return {0, st, prev}
    end
  else
    st = 'unparsable'
  end
elseif t ~= 'none' then
  st = t
  redis.call('DEL', KEYS[1])
end
local res = {1, st, prev}
local it = redis.call('TYPE', KEYS[2])['ok']
if it ~= 'zset' and it ~= 'none' then
  redis.call('DEL', KEYS[2])
  res[4] = it
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
return res
`)

// servicesScript adds ARGV[1] to the services set KEYS[1], replacing a key of
// another type first; it returns {1} or {1, <the type replaced>}.
var servicesScript = redis.NewScript(`
local res = {1}
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'set' and t ~= 'none' then
  redis.call('DEL', KEYS[1])
  res[2] = t
end
redis.call('SADD', KEYS[1], ARGV[1])
return res
`)

// entryWrite is the commands of one entry write queued on a pipeline.
type entryWrite struct {
	entry    *scriptCall // entryScript
	services *scriptCall // servicesScript, nil when the write does not touch the set
}

// calls returns the write's script calls, for exec.
func (w entryWrite) calls() []*scriptCall { return []*scriptCall{w.entry, w.services} }

// entryResult is what entryScript found and did.
type entryResult struct {
	written   bool
	prevState string // "none", "entry", "unparsable" or the wrong type found
	prev      string
	indexType string // the wrong type of the index key replaced, if any
}

func (w entryWrite) result() (entryResult, error) {
	if w.entry == nil {
		return entryResult{}, errNotQueued
	}
	vals, err := w.entry.cmd.Slice()
	if err != nil {
		return entryResult{}, err
	}
	var res entryResult
	for i, v := range vals {
		n, _ := v.(int64)
		s, _ := v.(string)
		switch i {
		case 0:
			res.written = n == 1
		case 1:
			res.prevState = s
		case 2:
			res.prev = s
		case 3:
			res.indexType = s
		}
	}
	return res, nil
}

// errNotQueued: result of an entry write that was not queued.
var errNotQueued = errors.New("registry: no entry write queued")

// queueEntry adds the writes of one entry to pipe: entryScript ("cas" or
// "take" over the entry) and, with addService, servicesScript, by their SHA1;
// run pipe with exec, which sends a script's text when Redis lacks it.
func (r *Registry) queueEntry(ctx context.Context, pipe redis.Pipeliner, e Entry, addService, cas bool) entryWrite {
	now := r.cfg.clock.Now()
	// Entry holds only strings, ints, bools and times: Marshal cannot fail.
	b, _ := json.Marshal(e)
	mode := "take"
	if cas {
		mode = "cas"
	}
	var w entryWrite
	w.entry = r.newCall(ctx, pipe, entryScript, []string{EntryKey(e.Service, e.Instance), IndexKey(e.Service)},
		b, r.cfg.ttl.Milliseconds(), now.Add(r.cfg.ttl).UnixMilli(), e.Instance, now.UnixMilli(), e.Owner, mode)
	if addService {
		w.services = r.newCall(ctx, pipe, servicesScript, []string{ServicesKey}, e.Service)
	}
	return w
}

// reportFixes logs, at warn, the keys of the wrong type that write w replaced
// and an entry it rewrote because it was not JSON: data that someone or
// something else put under the registry's keys.
func (r *Registry) reportFixes(w entryWrite, service, instance string) {
	res, err := w.result()
	if err != nil || !res.written {
		return
	}
	key := EntryKey(service, instance)
	switch res.prevState {
	case "none", "entry":
	case "unparsable":
		r.cfg.log.Warn("registry: rewrote an entry that was not a JSON object", "key", key, "was", abbreviate(res.prev))
	default:
		r.cfg.log.Warn("registry: replaced a registry key of the wrong type", "key", key, "type", res.prevState)
	}
	if res.indexType != "" {
		r.cfg.log.Warn("registry: replaced a registry key of the wrong type", "key", IndexKey(service), "type", res.indexType)
	}
	if w.services != nil {
		if vals, err := w.services.cmd.Slice(); err == nil && len(vals) > 1 {
			t, _ := vals[1].(string)
			r.cfg.log.Warn("registry: replaced a registry key of the wrong type", "key", ServicesKey, "type", t)
		}
	}
}

// abbreviate cuts s for a log line.
func abbreviate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// cmdError returns the error reply of the first command among cmds that
// Redis answered with an error, naming the command and its key (so that a
// WRONGTYPE says which key), or err when there is none (the connection
// failed: no key is to blame).
func cmdError(cmds []redis.Cmder, err error) error {
	for _, c := range cmds {
		cerr := c.Err()
		var reply redis.Error
		if cerr == nil || !errors.As(cerr, &reply) {
			continue
		}
		args, name, key := c.Args(), strings.ToUpper(c.Name()), ""
		switch {
		case (name == "EVAL" || name == "EVALSHA") && len(args) > 3:
			name, key = "script", fmt.Sprint(args[3])
		case len(args) > 1:
			key = fmt.Sprint(args[1])
		}
		return fmt.Errorf("%s %s: %w", name, key, cerr)
	}
	return err
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
		return false, fmt.Errorf("registry: heartbeat of %s: %w", EntryKey(service, instance), r.failed(err))
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
		return fmt.Errorf("registry: deregistering %s: %w", EntryKey(service, instance), r.failed(err))
	}
	return nil
}

// Instances returns the live entries of service, sorted by instance id:
// List without the expiry times.
func (r *Registry) Instances(ctx context.Context, service string) ([]Entry, error) {
	ins, err := r.List(ctx, service)
	if err != nil || ins == nil {
		return nil, err
	}
	out := make([]Entry, len(ins))
	for i, in := range ins {
		out[i] = in.Entry
	}
	return out, nil
}

// reportWrongTypes logs the keys among keys (entries MGET found no string
// for) that exist with another type, so that an entry someone replaced with
// a hash is named rather than silently missing. It costs a round trip only
// when MGET came back with gaps; a failure of that read is not reported.
func (r *Registry) reportWrongTypes(ctx context.Context, keys []string) {
	if len(keys) == 0 {
		return
	}
	pipe := r.c.Pipeline()
	types := make([]*redis.StatusCmd, len(keys))
	for i, k := range keys {
		types[i] = pipe.Type(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return
	}
	for i, t := range types {
		if v := t.Val(); v != "none" && v != "string" {
			r.cfg.log.Warn("registry: skipping an entry key of the wrong type", "key", keys[i], "type", v)
		}
	}
}

// Services returns the names of all services that ever registered, sorted.
func (r *Registry) Services(ctx context.Context) ([]string, error) {
	names, err := r.c.SMembers(ctx, ServicesKey).Result()
	if err != nil {
		return nil, fmt.Errorf("registry: reading %s: %w", ServicesKey, r.failed(err))
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
		return Entry{}, fmt.Errorf("registry: reading %s: %w", key, r.failed(err))
	}
	var e Entry
	if err := json.Unmarshal([]byte(s), &e); err != nil {
		return Entry{}, fmt.Errorf("registry: decoding %s: %w", key, err)
	}
	return e, nil
}
