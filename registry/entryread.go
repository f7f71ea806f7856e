package registry

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/blockread"
	"github.com/stargazer/lifecycle/internal/redisacl"
)

// MaxEntryJSONLen bounds an entry as the registry's readers load it, its
// JSON in bytes: List (so Instances, sgctl ps, the dashboard and a Watcher's
// resync), Entry and a Watcher's reads of the instances its events name skip
// a longer value unread, with a warning naming the key. What the registry
// writes is far shorter (MaxValueLen, MaxErrorLen): the room is for JSON's
// escapes.
const MaxEntryJSONLen = 64 << 10

// storedEntry is one key as readEntries read it.
type storedEntry struct {
	raw    string // the JSON, when found within MaxEntryJSONLen
	found  bool   // a string was found (size 0) and read
	size   int64  // the length of a string over MaxEntryJSONLen, not read
	score  float64
	scored bool
}

// readEntries reads keys (one service's entries, one slot) in one round
// trip without loading a value over MaxEntryJSONLen: the length of each
// (STRLEN) and at most MaxEntryJSONLen bytes of it (GETRANGE), a prefix a
// value longer than that is known by its length, so it is never decoded;
// with index, also the scores of members in it (members[i] is keys[i]'s
// instance). A key that holds no string is not found (rangeRead decides what
// each key held). A connection failure, or a refusal (explained for the
// sg-reader role), is an error.
func (r *Registry) readEntries(ctx context.Context, keys []string, index string, members []string) ([]storedEntry, error) {
	pipe := r.c.Pipeline()
	lens := make([]*redis.IntCmd, len(keys))
	gets := make([]*redis.StringCmd, len(keys))
	var scores []*redis.FloatCmd
	for i, k := range keys {
		lens[i] = pipe.StrLen(ctx, k)
		gets[i] = pipe.GetRange(ctx, k, 0, MaxEntryJSONLen-1)
	}
	if index != "" {
		scores = make([]*redis.FloatCmd, len(members))
		for i, m := range members {
			scores[i] = pipe.ZScore(ctx, index, m)
		}
	}
	if cmds, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		var reply redis.Error
		if !errors.As(err, &reply) { // a connection failure, not a bad key
			return nil, r.failed(err)
		}
		if redisacl.Refused(err) { // the user's rules, not a bad key: nothing could be read
			return nil, cmdErrorAs(redisacl.Reader, cmds, err)
		}
	}
	out := make([]storedEntry, len(keys))
	for i := range keys {
		out[i] = rangeRead(gets[i], lens[i])
	}
	for i, sc := range scores {
		if v, err := sc.Result(); err == nil {
			out[i].score, out[i].scored = v, true
		}
	}
	return out, nil
}

// rangeRead decides what one key held from its bounded range and its
// length (blockread.Prefix).
func rangeRead(get *redis.StringCmd, strlen *redis.IntCmd) storedEntry {
	raw, found, size := blockread.Prefix(get, strlen, MaxEntryJSONLen)
	return storedEntry{raw: raw, found: found, size: size}
}
