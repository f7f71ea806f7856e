// Redis refusing a call for want of permission (NOPERM): the errors name
// the rule of docs/redis-acl.md that the call needed.

package registry

import (
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redisacl"
)

// ErrNoPermission matches (errors.Is) the errors of calls Redis refused
// for want of permission (NOPERM): the Redis user lacks a rule of its role's
// line in docs/redis-acl.md, which the error names ("the sg-instance role
// needs ~sg:registry:*"). A Member's writes and heartbeats belong to the
// sg-instance role, listing and watching to sg-reader.
var ErrNoPermission = redisacl.ErrNoPermission

// scriptSources maps each script's SHA1 to its source, so that a refusal
// inside a script is explained by the line Redis names.
var scriptSources = map[string]string{}

// newScript is redis.NewScript, keeping src for the explanations.
func newScript(src string) *redis.Script {
	s := redis.NewScript(src)
	scriptSources[s.Hash()] = src
	return s
}

// scriptRefusal describes a refused run of script s on keys, for redisacl.
func scriptRefusal(s *redis.Script, keys ...string) redisacl.Call {
	return redisacl.Call{Cmd: "EVALSHA", Keys: keys, Script: scriptSources[s.Hash()]}
}

// refused explains err when Redis refused the call for want of permission
// (naming role's rule for cmd on keys), and asks a cluster client to reload
// its slot map when err says it may be stale; it returns err otherwise.
func (r *Registry) refused(role redisacl.Role, err error, cmd string, keys ...string) error {
	return redisacl.Explain(r.failed(err), role, redisacl.Call{Cmd: cmd, Keys: keys})
}

// callOf describes a queued command for redisacl: its name, its keys and,
// for a script, its source.
func callOf(c redis.Cmder) redisacl.Call {
	args, name := c.Args(), strings.ToUpper(c.Name())
	call := redisacl.Call{Cmd: name}
	switch {
	case (name == "EVAL" || name == "EVALSHA") && len(args) > 2:
		src := fmt.Sprint(args[1])
		if name == "EVALSHA" {
			src = scriptSources[src]
		}
		call.Script = src
		n, _ := args[2].(int) // go-redis sends the key count as an int
		for i := 3; i < 3+n && i < len(args); i++ {
			call.Keys = append(call.Keys, fmt.Sprint(args[i]))
		}
	case len(args) > 1:
		call.Keys = []string{fmt.Sprint(args[1])}
	}
	return call
}
