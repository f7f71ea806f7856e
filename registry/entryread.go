package registry

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/blockread"
)

// MaxEntryJSONLen bounds an entry as the registry's readers load it, its
// JSON in bytes: List (so Instances, sgctl ps, the dashboard and a Watcher's
// resync) and a Watcher's reads of the instances its events name skip a
// longer value unread, with a warning naming the key. What the registry
// writes is far shorter (MaxValueLen, MaxErrorLen): the room is for JSON's
// escapes.
const MaxEntryJSONLen = 64 << 10

// entriesScript reads entry keys one by one: a key that holds a string of at
// most ARGV[1] bytes gives {value}, a longer one {length} (STRLEN, which
// does not read it), any other key (absent, of another type) {false}. With
// ARGV[2] = "1" the last key is an index, and each item also carries the
// score of the member ARGV[2+i] in it (false when none). The entries and
// their index share a slot.
var entriesScript = redis.NewScript(`
local max, scored = tonumber(ARGV[1]), ARGV[2] == '1'
local n = #KEYS
if scored then n = n - 1 end
local out = {}
for i = 1, n do
  local v = false
  local len = redis.pcall('STRLEN', KEYS[i])
  if type(len) == 'number' then
    if len > max then v = len else v = redis.call('GET', KEYS[i]) end
  end
  local sc = false
  if scored then
    sc = redis.pcall('ZSCORE', KEYS[#KEYS], ARGV[2 + i])
    if type(sc) ~= 'string' then sc = false end
  end
  out[i] = {v, sc}
end
return out
`)

// storedEntry is one key as entriesScript read it.
type storedEntry struct {
	raw    string // the JSON, when found within MaxEntryJSONLen
	found  bool
	size   int64 // the length of a string over MaxEntryJSONLen, not read
	score  float64
	scored bool
}

// readEntries reads keys (one service's entries) without loading a value over
// MaxEntryJSONLen; with index, also the scores of members in it (members[i]
// is keys[i]'s instance).
func (r *Registry) readEntries(ctx context.Context, keys []string, index string, members []string) ([]storedEntry, error) {
	args := []any{MaxEntryJSONLen, "0"}
	ks := keys
	if index != "" {
		args[1] = "1"
		ks = append(append(make([]string, 0, len(keys)+1), keys...), index)
		for _, m := range members {
			args = append(args, m)
		}
	}
	v, err := blockread.RunRO(ctx, r.c, entriesScript, ks, args...).Slice()
	if err != nil {
		return nil, err
	}
	if len(v) != len(keys) {
		return nil, fmt.Errorf("registry: reading %d entries: %d answers", len(keys), len(v))
	}
	out := make([]storedEntry, len(keys))
	for i, it := range v {
		item, _ := it.([]any)
		if len(item) != 2 {
			continue
		}
		switch x := item[0].(type) {
		case string:
			out[i].raw, out[i].found = x, true
		case int64:
			out[i].size = x
		}
		if s, ok := item[1].(string); ok {
			if f, err := strconv.ParseFloat(s, 64); err == nil {
				out[i].score, out[i].scored = f, true
			}
		}
	}
	return out, nil
}
