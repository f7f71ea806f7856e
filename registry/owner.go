package registry

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/stargazer/lifecycle/internal/invisible"
)

// ErrOwnerConflict is wrapped by the error Member.Conflict returns: another
// process took this instance's entry over, so two processes run with one
// instance id.
var ErrOwnerConflict = errors.New("registry: another process owns the entry")

// OwnerConflictError names the two processes that share an instance id: this
// one, which stopped writing the entry, and the one whose owner token the
// entry carries.
type OwnerConflictError struct {
	Key       string // the entry's key
	Host      string // this process
	PID       int
	OtherHost string // the process that owns the entry, as its entry says
	OtherPID  int
}

func (e *OwnerConflictError) Error() string {
	return fmt.Sprintf("registry: %s is owned by another process (host %q, pid %d), not by this one (host %q, pid %d): "+
		"two processes run with one instance id; this one stopped writing the entry until the other's is gone", e.Key, e.OtherHost, e.OtherPID, e.Host, e.PID)
}

// Unwrap returns ErrOwnerConflict.
func (e *OwnerConflictError) Unwrap() error { return ErrOwnerConflict }

// newOwnerToken returns 128 random bits in hex: unique per process.
func newOwnerToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails on the platforms Go supports
	return hex.EncodeToString(b[:])
}

// memberHeartbeatScript refreshes the TTL of an entry (KEYS[1]) and its index
// score (KEYS[2]) when the entry is still the member's: a JSON object whose
// owner is ARGV[4]. ARGV: 1 the TTL in ms, 2 the score, 3 the instance id,
// 4 the owner token. It returns {1, 'entry'} when it refreshed, else {0,
// what it found}: 'none' (the entry vanished; its index member is removed),
// 'unparsable', 'other' and the entry's text, the type of an entry key that
// is not a string, or 'index:' and the type of an index key that is not a
// sorted set. Nothing is written then: the member rewrites its entry through
// entryScript, or stops writing it ('other').
//
// It runs on every idle instance every TTL/3, so its usual path is three
// commands (GET, ZADD, PEXPIRE): keys of the wrong type are found by the
// errors of GET and ZADD (redis.pcall), not by a TYPE before each. Any other
// error of ZADD (Redis refusing writes: OOM, READONLY, MISCONF) is the
// script's error, so that the heartbeat reports it as it is.
var memberHeartbeatScript = newScript(`
local v = redis.pcall('GET', KEYS[1])
if type(v) == 'table' then
  return {0, redis.call('TYPE', KEYS[1])['ok']}
end
if not v then
  redis.pcall('ZREM', KEYS[2], ARGV[3])
  return {0, 'none'}
end
local ok, e = pcall(cjson.decode, v)
if not (ok and type(e) == 'table') then
  return {0, 'unparsable'}
end
if e['owner'] ~= ARGV[4] then
  return {0, 'other', v}
end
local z = redis.pcall('ZADD', KEYS[2], ARGV[2], ARGV[3])
if type(z) == 'table' then
  if not string.find(z['err'], 'WRONGTYPE', 1, true) then
    return redis.error_reply(z['err'])
  end
  return {0, 'index:' .. redis.call('TYPE', KEYS[2])['ok']}
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {1, 'entry'}
`)

// memberDeregisterScript deletes an entry (KEYS[1]) and its index member
// (KEYS[2]) unless the entry is a JSON object whose owner is not ARGV[1]:
// then it returns {0, <the entry>} and deletes nothing. An entry that is not
// JSON, or a key of another type, is deleted too: the key is the registry's.
// ARGV[2] is the instance id.
var memberDeregisterScript = newScript(`
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'string' then
  local v = redis.call('GET', KEYS[1])
  local ok, e = pcall(cjson.decode, v)
  if ok and type(e) == 'table' and e['owner'] ~= ARGV[1] then
    return {0, v}
  end
end
if t ~= 'none' then
  redis.call('DEL', KEYS[1])
end
if redis.call('TYPE', KEYS[2])['ok'] == 'zset' then
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return {1}
`)

// scriptReply splits a script's array reply into its leading integer and its
// strings.
func scriptReply(vals []any) (n int64, strs []string) {
	for i, v := range vals {
		if i == 0 {
			n, _ = v.(int64)
			continue
		}
		s, _ := v.(string)
		strs = append(strs, s)
	}
	return n, strs
}

// ownerOf decodes the host and pid of an entry another process wrote, for
// the conflict report; what does not decode stays zero.
func ownerOf(raw string) (host string, pid int) {
	var e struct {
		Host string `json:"host"`
		PID  int    `json:"pid"`
	}
	_ = json.Unmarshal([]byte(raw), &e)
	return e.Host, e.PID
}

// lose records that another process owns the entry (other is its text) and
// logs it at warn, once per loss: until that process's entry is gone the
// member writes no entry (the heartbeat watches for it: see reclaim).
func (m *Member) lose(other string) {
	host, pid := ownerOf(other)
	m.mu.Lock()
	if m.conflict != nil {
		m.mu.Unlock()
		return
	}
	c := &OwnerConflictError{Key: EntryKey(m.service, m.instance), Host: m.latest.Host, PID: m.latest.PID, OtherHost: host, OtherPID: pid}
	m.conflict = c
	m.mu.Unlock()
	m.log.Warn("registry: another process took this instance's entry over; this process stops writing it, and takes it back once that process's entry is gone (give each process its own instance id)",
		"key", c.Key,
		"host", c.Host, "pid", c.PID, "owner_host", invisible.Text(short(c.OtherHost)), "owner_pid", c.OtherPID)
}

// reclaim ends a loss: the other process's entry is gone, so the member's
// next entry write takes the entry over again. The caller then writes it.
func (m *Member) reclaim() {
	m.mu.Lock()
	c := m.conflict
	m.conflict, m.claimed = nil, false
	m.mu.Unlock()
	if c != nil {
		m.log.Warn("registry: the process that took this instance's entry over is gone; this process takes the entry back",
			"key", c.Key, "owner_host", invisible.Text(short(c.OtherHost)), "owner_pid", c.OtherPID)
	}
}
