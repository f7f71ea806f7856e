// Package redisacl holds the Redis ACL rules of the fleet's three roles, as
// docs/redis-acl.md gives them (sg-instance, sg-reader, sg-operator), and
// turns a refusal by Redis (NOPERM) into an error that says which rule of
// which role the refused call needed.
//
// Redis says which command it refused, never which key: "NOPERM this user has
// no permissions to access one of the keys used as arguments". The library's
// call sites know the key and the role the call belongs to; Explain, given
// both, names the rule of the role's line that grants it:
//
//	registry: registering sg:registry:service:{demo}:d1: script sg:registry:service:{demo}:d1:
//	NOPERM this user has no permissions to access one of the keys used as arguments:
//	the sg-instance role needs ~sg:registry:* (docs/redis-acl.md)
//
// Inside a Lua script Redis 7.0 says neither the command nor the key ("ERR
// The user executing the script can't run this command or subcommand script:
// <sha>, on @user_script:3."), only the script's line; Explain reads the
// command and its KEYS on that line of the script's source (Call.Script).
// Redis 7.2 and later name the command there too ("NOPERM User u has no
// permissions to run the 'type' command script: ...").
//
// The rules here are the lines of docs/redis-acl.md, rule by rule; a test
// reads the document and fails when the two differ, and the tests that run
// every role against a real redis-server create their users from the
// document's lines.
package redisacl

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Doc is where the roles are documented, relative to the module's root.
const Doc = "docs/redis-acl.md"

// Role is one of the fleet's Redis users.
type Role string

// The roles of docs/redis-acl.md.
const (
	// Instance is a lifecycle process: registry writes and heartbeats,
	// sg:events, the control-ops daemon.
	Instance Role = "sg-instance"
	// Reader lists and watches: sgctl ps, watch and diagram, the dashboard
	// without actions, a registry.Watcher and the balancer.
	Reader Role = "sg-reader"
	// Operator is Reader plus sending control ops and reading their results.
	Operator Role = "sg-operator"
)

// Roles are the roles, in the document's order.
var Roles = []Role{Instance, Reader, Operator}

// readerRules are what every role that reads the registry and sg:events has.
var readerRules = []string{
	"+ping", "+smembers", "+zrangebyscore", "+zscore", "+strlen", "+getrange", "+get", "+type", "+time",
	"+xread", "+xrange", "+xrevrange",
	"%R~sg:registry:*", "%R~sg:events",
}

// rules are the rules of each role's line in Doc, after "reset on
// >PASSWORD", in the document's order. Commands first, then key patterns.
var rules = map[Role][]string{
	Instance: {
		"+ping",
		"+eval", "+evalsha",
		"+type", "+get", "+set", "+del",
		"+zadd", "+zrem", "+zremrangebyscore", "+zscore", "+zcard",
		"+sadd", "+pexpire", "+pexpireat",
		"+xadd", "+xread", "+xrevrange",
		"+hgetall", "+hset",
		"~sg:registry:*",
		"%W~sg:events",
		"%R~sg:control:{*}",
		"%W~sg:control:results:*",
		"~sg:control:nonce:*",
		"~sg:control:slots:*",
		"~sg:control:pending:*",
	},
	Reader: readerRules,
	Operator: {
		"+ping", "+smembers", "+zrangebyscore", "+zscore", "+strlen", "+getrange", "+get", "+type",
		"+xread", "+xrange", "+xrevrange",
		"+xadd",
		"%R~sg:registry:*", "%R~sg:events",
		"%W~sg:control:{*}",
		"%R~sg:control:results:*",
	},
}

// Rules returns the rules of role's line, in order: the tokens that follow
// "ACL SETUSER <role> reset on >PASSWORD" in Doc.
func Rules(r Role) []string { return slices.Clone(rules[r]) }

// ErrNoPermission matches (errors.Is) every error Explain returns: Redis
// refused a command or a key to the connection's user.
var ErrNoPermission = errors.New("redis: no permission (NOPERM)")

// Error is a call Redis refused for want of permission, with the rule of
// Role's line that grants it.
type Error struct {
	Role Role
	// Rule is the rule the call needed, as the role's line writes it
	// ("+xadd", "%W~sg:events"), or several joined by " and " when a
	// refused key may be under any of them; a description when the role's
	// line has no rule for it.
	Rule string
	// Err is Redis's reply.
	Err error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%v: the %s role needs %s (%s)", e.Err, e.Role, e.Rule, Doc)
}

// Unwrap returns Redis's reply and ErrNoPermission.
func (e *Error) Unwrap() []error { return []error{e.Err, ErrNoPermission} }

// Call is what one refused call sent, for Explain.
type Call struct {
	// Cmd is the command: "XADD", "EVALSHA", ... (any case).
	Cmd string
	// Keys are the keys it names: a script's KEYS.
	Keys []string
	// Script is the Lua source a script call ran (EVAL, EVALSHA), as
	// written: Redis numbers its lines from the first, so a refusal inside
	// the script names the line of the command it refused.
	Script string
}

var (
	namedCmdRE   = regexp.MustCompile(`permissions to run the '([^']+)' command`)
	scriptLineRE = regexp.MustCompile(`@user_script:(\d+)`)
	luaCallRE    = regexp.MustCompile(`redis\.p?call\(\s*'([A-Za-z]+)'`)
	luaKeyRE     = regexp.MustCompile(`KEYS\[(\d+)\]`)
)

// Refused reports whether err is Redis refusing a command or a key for want
// of permission: a NOPERM reply, or a command refused inside a script, which
// Redis 7.0 reports as ERR "The user executing the script can't ...".
func Refused(err error) bool {
	var re redis.Error
	if err == nil || !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	return strings.HasPrefix(msg, "NOPERM") || strings.Contains(msg, "The user executing the script can't")
}

// Explain returns err as an *Error naming the rule of role that call needed,
// when err is a refusal (Refused) and not already explained; err otherwise.
// A refused command is named as the role's line grants it ("+xadd"); a
// refused key by the role's pattern that covers it ("~sg:registry:*"). Inside
// a script, the command and the keys are read from the script's line that
// Redis names; when it names none, every command the script may run is named.
func Explain(err error, role Role, call Call) error {
	if !Refused(err) {
		return err
	}
	var done *Error
	if errors.As(err, &done) {
		return err
	}
	return &Error{Role: role, Rule: rule(err, role, call), Err: err}
}

// rule is the rule the refused call needed.
func rule(err error, role Role, call Call) string {
	var re redis.Error
	errors.As(err, &re) // Refused checked it
	msg := re.Error()
	if m := namedCmdRE.FindStringSubmatch(msg); m != nil {
		return commandRule(role, m[1])
	}
	keyRefused := strings.Contains(msg, "access one of the keys") || strings.Contains(msg, "access a key") ||
		strings.Contains(msg, "access at least one of the keys")
	inScript := call.Script != "" && (strings.Contains(msg, "script") || !strings.HasPrefix(msg, "NOPERM"))
	if !inScript {
		if keyRefused {
			return keysRule(role, call.Keys)
		}
		return commandRule(role, call.Cmd)
	}
	// Refused inside the script: by the line Redis names, or else any of its
	// commands (and, for a key, any of its keys).
	lines := strings.Split(call.Script, "\n")
	if m := scriptLineRE.FindStringSubmatch(msg); m != nil {
		if n, _ := strconv.Atoi(m[1]); n >= 1 && n <= len(lines) {
			line := lines[n-1]
			if keyRefused {
				if keys := scriptKeys(line, call.Keys); len(keys) > 0 {
					return keysRule(role, keys)
				}
			} else if calls := luaCallRE.FindAllStringSubmatch(line, -1); len(calls) == 1 {
				return commandRule(role, calls[0][1])
			} else if len(calls) > 1 {
				return oneOf(role, calls, "the commands of the script's line")
			}
		}
	}
	if keyRefused {
		return keysRule(role, call.Keys)
	}
	return oneOf(role, luaCallRE.FindAllStringSubmatch(call.Script, -1), "the commands of the script")
}

// oneOf names the rules of the commands of calls (luaCallRE matches), each
// once: "one of +zscore, +zcard (what)".
func oneOf(role Role, calls [][]string, what string) string {
	var cmds []string
	for _, c := range calls {
		if r := commandRule(role, c[1]); !slices.Contains(cmds, r) {
			cmds = append(cmds, r)
		}
	}
	return "one of " + strings.Join(cmds, ", ") + " (" + what + ")"
}

// scriptKeys returns the keys of keys that line names as KEYS[i].
func scriptKeys(line string, keys []string) []string {
	var out []string
	for _, m := range luaKeyRE.FindAllStringSubmatch(line, -1) {
		if i, _ := strconv.Atoi(m[1]); i >= 1 && i <= len(keys) && !slices.Contains(out, keys[i-1]) {
			out = append(out, keys[i-1])
		}
	}
	return out
}

// extras are commands a client sends for a deployment or a connection
// option, not for the lifecycle, and when Doc says to add them.
var extras = map[string]string{
	"cluster|slots":  "Redis Cluster clients need it beside the line",
	"command":        "Redis Cluster clients need it beside the line (or ask it again before every command)",
	"select":         "a REDIS_URL naming a database other than 0 needs it beside the line",
	"client|setname": "a REDIS_URL with client_name= needs it beside the line",
	"client|setinfo": "go-redis sends it on Redis 7.2 and later, and goes on without it",
	"readonly":       "a cluster client reading from replicas needs it beside the line",
}

// commandRule names the rule that grants cmd ("client|setinfo" or "XADD").
func commandRule(role Role, cmd string) string {
	r := "+" + strings.ToLower(cmd)
	if slices.Contains(rules[role], r) {
		return r
	}
	if note, ok := extras[strings.ToLower(cmd)]; ok {
		return r + " (not in the role's line: " + note + ")"
	}
	return r + " (not in the role's line: a command of the service's own)"
}

// keysRule names the role's patterns that cover keys, each once, in the
// line's order.
func keysRule(role Role, keys []string) string {
	var out []string
	for _, k := range keys {
		p := KeyRule(role, k)
		if p == "" {
			p = fmt.Sprintf("a pattern for %q (not in the role's line: a key of the service's own)", k)
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return "a key pattern (the key was not given)"
	}
	return strings.Join(out, " and ")
}

// KeyRule returns the first key rule of role's line whose pattern matches
// key ("~sg:registry:*", "%W~sg:events"), or "".
func KeyRule(role Role, key string) string {
	for _, r := range rules[role] {
		_, pat, ok := strings.Cut(r, "~")
		if ok && Match(pat, key) {
			return r
		}
	}
	return ""
}

// Match reports whether key matches pattern as Redis matches ACL key
// patterns (stringmatchlen): '*' any run, '?' one byte, '\' quotes the next
// byte, "[...]" a set (ranges, '^' negates). Other bytes, braces included,
// match themselves.
func Match(pattern, key string) bool {
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*':
			for len(pattern) > 1 && pattern[1] == '*' {
				pattern = pattern[1:]
			}
			if len(pattern) == 1 {
				return true
			}
			for i := 0; i <= len(key); i++ {
				if Match(pattern[1:], key[i:]) {
					return true
				}
			}
			return false
		case '?':
			if key == "" {
				return false
			}
			key = key[1:]
			pattern = pattern[1:]
			continue
		case '[':
			end := strings.IndexByte(pattern[1:], ']')
			if end < 0 || key == "" {
				return false
			}
			set := pattern[1 : end+1]
			neg := strings.HasPrefix(set, "^")
			if neg {
				set = set[1:]
			}
			in := false
			for i := 0; i < len(set); i++ {
				if i+2 < len(set) && set[i+1] == '-' {
					if set[i] <= key[0] && key[0] <= set[i+2] {
						in = true
					}
					i += 2
				} else if set[i] == key[0] {
					in = true
				}
			}
			if in == neg {
				return false
			}
			key = key[1:]
			pattern = pattern[end+2:]
			continue
		case '\\':
			if len(pattern) > 1 {
				pattern = pattern[1:]
			}
		}
		if key == "" || key[0] != pattern[0] {
			return false
		}
		key = key[1:]
		pattern = pattern[1:]
	}
	return key == ""
}
