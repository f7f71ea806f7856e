package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/fleetenv"
)

// Instance is one live instance of a service as the registry lists it: its
// entry, and when the entry expires unless the instance writes or
// heartbeats again.
type Instance struct {
	Entry
	// Expires is the instance's index score: the writer's clock at its last
	// write or heartbeat, plus the TTL. The entry's own key expires then too.
	Expires time.Time
}

// List returns the live instances of service with their expiry times,
// sorted by instance id. It is the registry's one listing: Instances, sgctl
// ps, the dashboard and a Watcher's resync read through it.
//
// It trims expired index members and reads the live ones with their scores
// in one round trip, then their entries (one slot) in a second, with a
// read-only script that skips a value over MaxEntryJSONLen unread (STRLEN);
// entries that vanished in between, whose JSON is unreadable, whose key is
// not a string, or that are oversized (all three logged at warn, naming the
// key) are skipped: one bad entry does not fail the listing. It never uses SCAN or KEYS. An unknown
// service has no instances and no error; an index key of the wrong type is
// an error naming it.
func (r *Registry) List(ctx context.Context, service string) ([]Instance, error) {
	return r.list(ctx, service, r.cfg.log)
}

// list is List, logging the entries it skips to log (a Watcher's carries
// the service).
func (r *Registry) list(ctx context.Context, service string, log *slog.Logger) ([]Instance, error) {
	if err := fleetenv.ValidateService(service); err != nil {
		return nil, fmt.Errorf("%w: service %q: %v", ErrInvalidName, service, err)
	}
	now := strconv.FormatInt(r.cfg.clock.Now().UnixMilli(), 10)
	idx := IndexKey(service)
	pipe := r.c.Pipeline()
	pipe.ZRemRangeByScore(ctx, idx, "-inf", now)
	ids := pipe.ZRangeByScoreWithScores(ctx, idx, &redis.ZRangeBy{Min: "(" + now, Max: "+inf"})
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("registry: reading index %s: %w", idx, r.failed(err))
	}
	zs := ids.Val()
	if len(zs) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(zs))
	expires := make([]time.Time, 0, len(zs))
	for _, z := range zs {
		id, ok := z.Member.(string)
		if !ok {
			continue
		}
		keys = append(keys, EntryKey(service, id))
		expires = append(expires, time.UnixMilli(int64(z.Score)))
	}
	vals, err := r.readEntries(ctx, keys, "", nil)
	if err != nil {
		return nil, fmt.Errorf("registry: reading entries of service %q: %w", service, r.failed(err))
	}
	out := make([]Instance, 0, len(vals))
	var missing []string
	for i, v := range vals {
		if v.size > 0 {
			log.Warn("registry: skipping an oversized entry unread", "key", keys[i], "bytes", v.size, "max_bytes", MaxEntryJSONLen)
			continue
		}
		s, ok := v.raw, v.found
		if !ok { // expired or evicted after the index read, or not a string
			missing = append(missing, keys[i])
			continue
		}
		var e Entry
		if err := json.Unmarshal([]byte(s), &e); err != nil {
			log.Warn("registry: skipping unreadable entry", "key", keys[i], "error", err)
			continue
		}
		out = append(out, Instance{Entry: e, Expires: expires[i]})
	}
	r.reportWrongTypes(ctx, log, missing)
	slices.SortFunc(out, func(a, b Instance) int { return strings.Compare(a.Instance, b.Instance) })
	return out, nil
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

// reportWrongTypes logs to log the keys among keys (entries MGET found no
// string for) that exist with another type, so that an entry someone
// replaced with a hash is named rather than silently missing. It costs a round trip only
// when MGET came back with gaps; a failure of that read is not reported.
func (r *Registry) reportWrongTypes(ctx context.Context, log *slog.Logger, keys []string) {
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
			log.Warn("registry: skipping an entry key of the wrong type", "key", keys[i], "type", v)
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

// Entry returns one instance's entry, or an error wrapping ErrNotFound (also
// when its key holds no string). A value over MaxEntryJSONLen is not read: an
// error says so.
func (r *Registry) Entry(ctx context.Context, service, instance string) (Entry, error) {
	if err := ValidateNames(service, instance); err != nil {
		return Entry{}, err
	}
	key := EntryKey(service, instance)
	v, err := r.readEntries(ctx, []string{key}, "", nil)
	if err != nil {
		return Entry{}, fmt.Errorf("registry: reading %s: %w", key, r.failed(err))
	}
	if v[0].size > 0 {
		return Entry{}, fmt.Errorf("registry: %s holds %d bytes, over MaxEntryJSONLen (%d): not read", key, v[0].size, MaxEntryJSONLen)
	}
	if !v[0].found {
		return Entry{}, fmt.Errorf("registry: %s: %w", key, ErrNotFound)
	}
	var e Entry
	if err := json.Unmarshal([]byte(v[0].raw), &e); err != nil {
		return Entry{}, fmt.Errorf("registry: decoding %s: %w", key, err)
	}
	return e, nil
}
