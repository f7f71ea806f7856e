package blockread

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Limits bound what a read loads of one stream.
type Limits struct {
	// Entry is the most bytes of one entry, its field names and values
	// summed; a larger entry is oversized.
	Entry int
	// Fields is the most fields of one entry; an entry with more is
	// oversized.
	Fields int
	// Reply is the most bytes of entries one read returns: a Scan page stops
	// before it (it holds one entry at least); the guard refuses a reply of
	// more than twice as much (guard).
	Reply int
}

// What an oversized entry keeps (Entry.Values): its fields whose name is at
// most ShortName bytes and value at most ShortValue bytes, ShortFields of
// them at most, so that a reader can still say what the entry claimed to be
// (an op's id, an event's service).
const (
	ShortName   = 64
	ShortValue  = 256
	ShortFields = 16
)

// MaxCount is the most entries one read returns; larger counts are lowered
// to it.
const MaxCount = 4096

// guard returns the guard's limits for a client reading entries within l:
// a bulk string can be no larger than an entry, an aggregate no larger than
// a page of entries or an entry's fields, a reply no larger than a page with
// room for the protocol's own bytes.
func (l Limits) guard() guardLimits {
	return guardLimits{
		bulk:      int64(l.Entry),
		aggregate: int64(max(2*l.Fields, MaxCount) + 8),
		reply:     int64(2*l.Reply + 2*l.Entry + 64<<10),
		line:      64 << 10,
	}
}

// Entry is one stream entry a read returned.
type Entry struct {
	ID string
	// Values are the entry's fields, as go-redis gives them (a later field
	// of the same name wins). For an oversized entry, only its short fields
	// (ShortName, ShortValue, ShortFields): the rest was never loaded.
	Values map[string]any
	// Size is the bytes of the entry's field names and values summed, and
	// Fields how many fields it has, as Redis holds it; for an entry the guard
	// refused, what it refused: a field's size (the entry is larger), or the
	// number of fields (Size 0), or the bytes of the reply when its budget ran
	// out (the entry is larger).
	Size   int64
	Fields int64
	// Oversized says the entry is over the read's Limits; Why says how, for
	// a message: "a field of 104857600 bytes", "5000 fields", "more than
	// 2228224 bytes", "104857690 bytes in 7 fields".
	Oversized bool
	Why       string
}

// Page is what one read returned.
type Page struct {
	// Entries are in the order read: the stream's order, or the reverse for a
	// reverse Scan.
	Entries []Entry
	// More says the page stopped at the Limits' Reply bytes before the count
	// and before the range's end: read on after its last entry.
	More bool
}

// Last returns the id of the page's last entry, "" when it has none.
func (p Page) Last() string {
	if len(p.Entries) == 0 {
		return ""
	}
	return p.Entries[len(p.Entries)-1].ID
}

// scanScript reads a range one entry at a time (XRANGE or XREVRANGE COUNT 1,
// so Redis never holds more than one oversized entry for the script), sizes
// each entry, and returns {more, entries...}: {id, fields} for an entry
// within the limits, {id, short fields, size, fields} for one beyond them.
// It stops after count entries, at the range's end, or before an entry that
// would take the page past the reply budget (more = 1). A dropped oversized
// entry is collected at once: Lua would otherwise keep it until its next
// cycle.
var scanScript = redis.NewScript(`
local key, from, to = KEYS[1], ARGV[1], ARGV[2]
local count, rev = tonumber(ARGV[3]), ARGV[4] == '1'
local maxEntry, maxFields, budget = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local shortName, shortValue, shortFields = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local out, used, n = {0}, 0, 0
while n < count do
  local r
  if rev then
    r = redis.call('XREVRANGE', key, from, to, 'COUNT', 1)
  else
    r = redis.call('XRANGE', key, from, to, 'COUNT', 1)
  end
  if #r == 0 then break end
  local id, f = r[1][1], r[1][2]
  r = nil
  local size = 0
  for i = 1, #f do size = size + #f[i] end
  local item, cost
  if size > maxEntry or #f > 2 * maxFields then
    local short = {}
    for i = 1, #f - 1, 2 do
      if #short < 2 * shortFields and #f[i] <= shortName and #f[i + 1] <= shortValue then
        short[#short + 1] = f[i]
        short[#short + 1] = f[i + 1]
      end
    end
    local nf = #f / 2
    f = nil
    collectgarbage()
    item, cost = {id, short, size, nf}, 64 + (shortName + shortValue) * #short / 2
  else
    item, cost = {id, f}, 32 + size + 8 * #f
  end
  if n > 0 and used + cost > budget then
    out[1] = 1
    break
  end
  out[#out + 1] = item
  used = used + cost
  n = n + 1
  from = '(' .. id
end
return out
`)

// noRO is set once a server said it has no EVALSHA_RO (Redis before 7.0):
// scripts run with EVALSHA from then on.
var noRO atomic.Bool

// RunRO runs s read-only (EVALSHA_RO, then EVAL_RO when the server does not
// have it cached), so that a user whose ACL lets it only read the key
// (%R~) may run it, and a replica may; Redis before 7.0 runs it with EVALSHA.
// s must not write.
func RunRO(ctx context.Context, c redis.Scripter, s *redis.Script, keys []string, args ...any) *redis.Cmd {
	if !noRO.Load() {
		cmd := s.RunRO(ctx, c, keys, args...)
		err := cmd.Err()
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "unknown command") {
			return cmd
		}
		noRO.Store(true)
	}
	return s.Run(ctx, c, keys, args...)
}

// Scan reads up to count entries (MaxCount at most) of the stream key, from
// from to to: XRANGE's start and end, or with reverse, XREVRANGE's end and
// start ("-", "+", an id, or "(" and an id to exclude it). Each entry is
// sized in Redis, by a Lua script (EVALSHA_RO): an oversized one comes back
// as its id, size, number of fields and short fields, never its data, so the
// reply is bounded by lim whoever wrote the stream, and Scan may run on any
// client. Redis loads one entry at a time for the script.
func Scan(ctx context.Context, c redis.Scripter, key, from, to string, count int64, reverse bool, lim Limits) (Page, error) {
	count = min(max(count, 1), MaxCount)
	rev := "0"
	if reverse {
		rev = "1"
	}
	v, err := RunRO(ctx, c, scanScript, []string{key}, from, to, count, rev, lim.Entry, lim.Fields, lim.Reply,
		ShortName, ShortValue, ShortFields).Slice()
	if err != nil {
		return Page{}, err
	}
	return parseScan(v)
}

func parseScan(v []any) (Page, error) {
	var p Page
	if len(v) == 0 {
		return p, fmt.Errorf("%w: empty scan reply", errMalformed)
	}
	more, _ := v[0].(int64)
	p.More = more == 1
	p.Entries = make([]Entry, 0, len(v)-1)
	for _, it := range v[1:] {
		item, ok := it.([]any)
		if !ok || len(item) != 2 && len(item) != 4 {
			return p, fmt.Errorf("%w: scan item %T", errMalformed, it)
		}
		id, _ := item[0].(string)
		fields, _ := item[1].([]any)
		e := Entry{ID: id, Values: make(map[string]any, len(fields)/2)}
		for i := 0; i+1 < len(fields); i += 2 {
			k, _ := fields[i].(string)
			val, _ := fields[i+1].(string)
			e.Values[k] = val
			e.Size += int64(len(k) + len(val))
		}
		e.Fields = int64(len(fields) / 2)
		if len(item) == 4 {
			e.Oversized = true
			e.Size, _ = item[2].(int64)
			e.Fields, _ = item[3].(int64)
			e.Why = fmt.Sprintf("%d bytes in %d fields", e.Size, e.Fields)
		}
		p.Entries = append(p.Entries, e)
	}
	return p, nil
}

// sized returns m as an Entry within lim, or, when it is beyond them, the
// oversized Entry a Scan would have returned.
func sized(m redis.XMessage, lim Limits) Entry {
	e := Entry{ID: m.ID, Values: m.Values, Fields: int64(len(m.Values))}
	for k, v := range m.Values {
		s, _ := v.(string)
		e.Size += int64(len(k) + len(s))
	}
	if e.Size <= int64(lim.Entry) && e.Fields <= int64(lim.Fields) {
		return e
	}
	e.Oversized = true
	e.Why = fmt.Sprintf("%d bytes in %d fields", e.Size, e.Fields)
	e.Values = map[string]any{}
	for k, v := range m.Values {
		s, _ := v.(string)
		if len(e.Values) < ShortFields && len(k) <= ShortName && len(s) <= ShortValue {
			e.Values[k] = s
		}
	}
	return e
}
