// One entry write: the entry script that sets an entry and its index
// member (take-over or compare-and-set on the owner token), the services
// set script, and the reports of foreign data they replaced.

package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/invisible"
	"github.com/stargazer/lifecycle/internal/redisacl"
)

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
var entryScript = newScript(`
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
var servicesScript = newScript(`
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

// reportFixes logs to log, at warn, the keys of the wrong type that write w
// replaced and an entry it rewrote because it was not JSON: data that
// someone or something else put under the registry's keys.
func reportFixes(log *slog.Logger, w entryWrite, service, instance string) {
	res, err := w.result()
	if err != nil || !res.written {
		return
	}
	key := EntryKey(service, instance)
	switch res.prevState {
	case "none", "entry":
	case "unparsable":
		log.Warn("registry: rewrote an entry that was not a JSON object", "key", key, "was", abbreviate(res.prev))
	default:
		log.Warn("registry: replaced a registry key of the wrong type", "key", key, "type", res.prevState)
	}
	if res.indexType != "" {
		log.Warn("registry: replaced a registry key of the wrong type", "key", IndexKey(service), "type", res.indexType)
	}
	if w.services != nil {
		if vals, err := w.services.cmd.Slice(); err == nil && len(vals) > 1 {
			t, _ := vals[1].(string)
			log.Warn("registry: replaced a registry key of the wrong type", "key", ServicesKey, "type", t)
		}
	}
}

// abbreviate cuts s, read from Redis, for a log line, which escapes what a
// reader could not see (invisible.Text).
func abbreviate(s string) invisible.Text {
	const max = 64
	if len(s) <= max {
		return invisible.Text(s)
	}
	return invisible.Text(s[:max] + "...")
}

// cmdError returns the error reply of the first command among cmds that
// Redis answered with an error, naming the command and its key (so that a
// WRONGTYPE says which key) and, for a refusal (NOPERM), the sg-instance
// role's rule it needed; or err when there is none (the connection failed:
// no key is to blame). cmds are an instance's writes.
func cmdError(cmds []redis.Cmder, err error) error { return cmdErrorAs(redisacl.Instance, cmds, err) }

// cmdErrorAs is cmdError for cmds of role.
func cmdErrorAs(role redisacl.Role, cmds []redis.Cmder, err error) error {
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
		return fmt.Errorf("%s %s: %w", name, key, redisacl.Explain(cerr, role, callOf(c)))
	}
	return err
}
