package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/internal/invisible"
	"github.com/stargazer/lifecycle/internal/ratelog"
	"github.com/stargazer/lifecycle/internal/redisacl"
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
// It reads the index members whose expiry is in the future, with their
// scores, in one round trip (ZRANGEBYSCORE), then their entries (one slot) in
// a second: the length of each (STRLEN) and at most MaxEntryJSONLen bytes of
// it (GETRANGE), so an entry someone bloated is skipped unread, with a
// warning naming its key. Names come from keys: an index member that cannot be
// an instance id, and an entry whose JSON names another service or instance
// than its key, or none (DecodeEntry), are skipped, as are entries that
// vanished in between, whose JSON is unreadable, or whose key is not a
// string; each is logged at warn naming the key, at most once a minute per
// key. One bad entry does not fail the listing. It never uses SCAN or KEYS,
// and writes nothing: the sg-reader role of docs/redis-acl.md, read-only,
// can list (expired members are trimmed by the instances' entry writes). An
// unknown service has no instances and no error; an index key of the wrong
// type is an error naming it.
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
	zs, err := r.c.ZRangeByScoreWithScores(ctx, idx, &redis.ZRangeBy{Min: "(" + now, Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("registry: reading index %s: %w", idx, r.refused(redisacl.Reader, err, "ZRANGEBYSCORE", idx))
	}
	if len(zs) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(zs))
	names := make([]string, 0, len(zs))
	expires := make([]time.Time, 0, len(zs))
	for _, z := range zs {
		id, ok := z.Member.(string)
		if !ok {
			continue
		}
		if err := fleetenv.ValidateInstance(id); err != nil {
			r.skipped(ctx, log, idx+"\x00"+id, "registry: skipping an index member that cannot be an instance id",
				"key", idx, "member", short(id))
			continue
		}
		keys = append(keys, EntryKey(service, id))
		names = append(names, id)
		expires = append(expires, time.UnixMilli(int64(z.Score)))
	}
	if len(keys) == 0 {
		return nil, nil
	}
	vals, err := r.readEntries(ctx, keys, "", nil)
	if err != nil {
		return nil, fmt.Errorf("registry: reading entries of service %q: %w", service, err)
	}
	out := make([]Instance, 0, len(vals))
	var missing []string
	for i, v := range vals {
		if v.size > 0 {
			r.skipped(ctx, log, keys[i], "registry: skipping an oversized entry unread", "key", keys[i], "bytes", v.size, "max_bytes", MaxEntryJSONLen)
			continue
		}
		if !v.found { // expired or evicted after the index read, or not a string
			missing = append(missing, keys[i])
			continue
		}
		e, err := DecodeEntry(service, names[i], []byte(v.raw))
		if err != nil {
			r.skipEntry(ctx, log, keys[i], err)
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

// reportWrongTypes logs to log the keys among keys (entries found with no
// string) that exist with another type, so that an entry someone
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
			r.skipped(ctx, log, keys[i], "registry: skipping an entry key of the wrong type", "key", keys[i], "type", v)
		}
	}
}

// Services returns the names of all services that ever registered, sorted.
func (r *Registry) Services(ctx context.Context) ([]string, error) {
	names, err := r.c.SMembers(ctx, ServicesKey).Result()
	if err != nil {
		return nil, fmt.Errorf("registry: reading %s: %w", ServicesKey, r.refused(redisacl.Reader, err, "SMEMBERS", ServicesKey))
	}
	slices.Sort(names)
	return names, nil
}

// Entry returns one instance's entry, or an error wrapping ErrNotFound (also
// when its key holds no string); an entry whose JSON names another instance
// is an error wrapping ErrNameMismatch, one that is not JSON the decoder's
// (DecodeEntry); a value over MaxEntryJSONLen is not read, an error says so.
func (r *Registry) Entry(ctx context.Context, service, instance string) (Entry, error) {
	if err := ValidateNames(service, instance); err != nil {
		return Entry{}, err
	}
	key := EntryKey(service, instance)
	v, err := r.readEntries(ctx, []string{key}, "", nil)
	if err != nil {
		return Entry{}, fmt.Errorf("registry: reading %s: %w", key, err)
	}
	if v[0].size > 0 {
		return Entry{}, fmt.Errorf("registry: %s holds %d bytes, over MaxEntryJSONLen (%d): not read", key, v[0].size, MaxEntryJSONLen)
	}
	if !v[0].found {
		return Entry{}, fmt.Errorf("registry: %s: %w", key, ErrNotFound)
	}
	return DecodeEntry(service, instance, []byte(v[0].raw))
}

// skipEntry logs, through skipped, an entry a reader skipped because
// DecodeEntry refused it (err).
func (r *Registry) skipEntry(ctx context.Context, log *slog.Logger, key string, err error) {
	if mm, ok := errors.AsType[*NameMismatchError](err); ok {
		r.skipped(ctx, log, key, "registry: skipping an entry whose JSON names another instance than its key",
			"key", key, "entry_service", short(mm.Service), "entry_instance", short(mm.Instance))
		return
	}
	r.skipped(ctx, log, key, "registry: skipping unreadable entry", "key", key, "error", err)
}

// skipped logs msg with args at warn to log, about something a reader
// skipped (limit names it): the first time at once, then at most once a
// minute per thing (ratelog.Keyed, on the registry's clock), with the count
// left out. A dashboard lists a service every few seconds; a bad entry is
// named once a minute, and however many keys a writer makes bad, the lines
// stay bounded.
func (r *Registry) skipped(ctx context.Context, log *slog.Logger, limit, msg string, args ...any) {
	ok, n := r.skips.Allow(limit)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, ratelog.SuppressedKey, n)
	}
	log.WarnContext(ctx, msg, loggable(args)...)
}

// loggable returns args, key-value pairs, with every string and error value
// as an invisible.Text: they hold what a Redis writer chose, and log/slog's
// JSON handler writes a bidi override or a zero-width space raw.
func loggable(args []any) []any {
	out := slices.Clone(args)
	for i := 1; i < len(out); i += 2 {
		switch v := out[i].(type) {
		case string:
			out[i] = invisible.Text(v)
		case error:
			out[i] = invisible.Text(v.Error())
		}
	}
	return out
}

// short bounds a value read from Redis for a log line: at most 128 bytes,
// valid UTF-8, "…" when cut.
func short(s string) string {
	if len(s) <= 128 {
		return strings.ToValidUTF8(s, "\ufffd")
	}
	return strings.ToValidUTF8(s[:128], "\ufffd") + "…"
}
