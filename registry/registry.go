// The Registry handle and its unconditional writes (Register, Deregister),
// for tools and tests; processes write through a Member.

package registry

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/ratelog"
	"github.com/stargazer/lifecycle/internal/retry"
)

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
	// skips rate-limits the readers' warnings about the entries they skip,
	// per key (see skipped).
	skips *ratelog.Keyed
}

// skipKeys is how many keys a Registry remembers warning about (skipped).
const skipKeys = 256

// New returns a Registry using c. It does not contact Redis.
func New(c redis.UniversalClient, opts ...Option) *Registry {
	cfg := config{
		ttl:          DefaultTTL,
		clock:        clockwork.NewRealClock(),
		log:          slog.Default(),
		eventsMaxLen: DefaultEventsMaxLen,
		queueSize:    DefaultQueueSize,
		retry:        retry.Default,
		writeTimeout: DefaultWriteTimeout,
	}
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	_, cluster := c.(*redis.ClusterClient)
	return &Registry{c: c, cfg: cfg, cluster: cluster, sentText: map[*redis.Script]*atomic.Bool{
		entryScript: new(atomic.Bool), servicesScript: new(atomic.Bool)},
		skips: ratelog.NewKeyed(cfg.clock, ratelog.DefaultInterval, skipKeys)}
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
// replaced and logged, as a Member's writes do. A field longer than
// MaxErrorLen (Error) or MaxValueLen (the others) is an error wrapping
// ErrTooLong that names it.
func (r *Registry) Register(ctx context.Context, e Entry) error {
	if err := ValidateNames(e.Service, e.Instance); err != nil {
		return err
	}
	if err := check("entry", entryFields(&e)); err != nil {
		return err
	}
	pipe := r.c.Pipeline()
	w := r.queueEntry(ctx, pipe, r.normalize(e), true, false)
	if cmds, err := r.exec(ctx, pipe, w.calls()...); err != nil {
		return fmt.Errorf("registry: registering %s: %w", EntryKey(e.Service, e.Instance), cmdError(cmds, err))
	}
	reportFixes(r.cfg.log, w, e.Service, e.Instance)
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
	if cmds, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("registry: deregistering %s: %w", EntryKey(service, instance), cmdError(cmds, r.failed(err)))
	}
	return nil
}

// newBackoff returns the backoff of one retrying loop doing what, with
// policy p, on the registry's clock and jitter source, logging to log.
func (r *Registry) newBackoff(what string, p retry.Policy, log *slog.Logger) *retry.Backoff {
	return retry.New(what, p, retry.WithClock(r.cfg.clock), retry.WithRand(r.cfg.rand), retry.WithLogger(log))
}
