package redisacl_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redisacl"
)

// replyError is a Redis error reply, as go-redis returns one.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

var _ redis.Error = replyError("")

const script = `
local t = redis.call('TYPE', KEYS[1])['ok']
local v = redis.call('GET', KEYS[1])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return 1
`

// Redis 7.0 and 7.2+ word refusals differently; each names the rule of the
// role that the call needed.
func TestExplainNamesTheRuleOfTheRoleForEachWordingOfARefusal(t *testing.T) {
	entry, index := "sg:registry:service:{demo}:d1", "sg:registry:index:{demo}"
	scriptCall := redisacl.Call{Cmd: "EVALSHA", Keys: []string{entry, index}, Script: script}
	for _, c := range []struct {
		name  string
		reply string
		role  redisacl.Role
		call  redisacl.Call
		rule  string
	}{
		{"7.0 command", "NOPERM this user has no permissions to run the 'xadd' command", redisacl.Instance,
			redisacl.Call{Cmd: "XADD", Keys: []string{"sg:events"}}, "+xadd"},
		{"7.2 command", "NOPERM User sg-reader has no permissions to run the 'xadd' command", redisacl.Operator,
			redisacl.Call{Cmd: "XADD", Keys: []string{"sg:control:{demo}"}}, "+xadd"},
		{"7.0 key", "NOPERM this user has no permissions to access one of the keys used as arguments", redisacl.Instance,
			redisacl.Call{Cmd: "XADD", Keys: []string{"sg:events"}}, "%W~sg:events"},
		{"7.2 key", "NOPERM No permissions to access a key", redisacl.Operator,
			redisacl.Call{Cmd: "XADD", Keys: []string{"sg:control:{demo}"}}, "%W~sg:control:{*}"},
		{"a script's keys", "NOPERM this user has no permissions to access one of the keys used as arguments", redisacl.Instance,
			scriptCall, "~sg:registry:*"},
		{"7.0 inside a script: the command on the line named",
			"ERR The user executing the script can't run this command or subcommand script: 4d21, on @user_script:3.", redisacl.Instance,
			scriptCall, "+get"},
		{"7.2 inside a script", "NOPERM User sg-instance has no permissions to run the 'zadd' command script: 4d21, on @user_script:4.", redisacl.Instance,
			scriptCall, "+zadd"},
		{"7.0 a key inside a script: the keys on the line named",
			"ERR The user executing the script can't access at least one of the keys mentioned in the command arguments script: 4d21, on @user_script:4.", redisacl.Instance,
			redisacl.Call{Cmd: "EVALSHA", Keys: []string{entry, "sg:events"}, Script: script}, "%W~sg:events"},
		{"inside a script, no line (a pcall's error returned)", "ERR The user executing the script can't run this command or subcommand", redisacl.Instance,
			scriptCall, "one of +type, +get, +zadd (the commands of the script)"},
		{"a command of the service's own", "NOPERM this user has no permissions to run the 'incr' command", redisacl.Instance,
			redisacl.Call{Cmd: "INCR", Keys: []string{"demo:{demo}:ticks"}}, "+incr (not in the role's line: a command of the service's own)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			reply := replyError(c.reply)
			err := redisacl.Explain(fmt.Errorf("doing it: %w", reply), c.role, c.call)
			var e *redisacl.Error
			if !errors.As(err, &e) || e.Rule != c.rule || e.Role != c.role {
				t.Fatalf("Explain = %v, want the rule %q of %s", err, c.rule, c.role)
			}
			if !errors.Is(err, redisacl.ErrNoPermission) || !errors.Is(err, reply) {
				t.Errorf("%v matches neither ErrNoPermission nor Redis's reply", err)
			}
			want := c.reply + ": the " + string(c.role) + " role needs " + c.rule + " (docs/redis-acl.md)"
			if !strings.HasSuffix(err.Error(), want) {
				t.Errorf("Explain = %q, want it to end %q", err, want)
			}
			if again := redisacl.Explain(err, redisacl.Reader, c.call); again != err {
				t.Errorf("explained twice: %v", again)
			}
		})
	}
}

func TestExplainLeavesOtherErrorsAsTheyAre(t *testing.T) {
	for _, err := range []error{nil, errors.New("dial tcp: connection refused"), replyError("WRONGTYPE Operation against a key holding the wrong kind of value"),
		replyError("ERR Error running script: attempt to index a nil value")} {
		if got := redisacl.Explain(err, redisacl.Instance, redisacl.Call{Cmd: "GET"}); got != err {
			t.Errorf("Explain(%v) = %v, want it unchanged", err, got)
		}
		if redisacl.Refused(err) {
			t.Errorf("Refused(%v)", err)
		}
	}
}

func TestMatchIsRedisGlob(t *testing.T) {
	for _, c := range []struct {
		pat, key string
		want     bool
	}{
		{"sg:registry:*", "sg:registry:service:{demo}:d1", true},
		{"sg:registry:*", "sg:registryx", false},
		{"sg:control:{*}", "sg:control:{demo}", true},
		{"sg:control:{*}", "sg:control:results:{demo}", false},
		{"sg:control:{*}", "sg:control:{demo}:x", false},
		{"sg:events", "sg:events", true},
		{"sg:events", "sg:events2", false},
		{"a?c", "abc", true},
		{"a[b-d]e", "ace", true},
		{"a[^b]c", "abc", false},
		{`a\*`, "a*", true},
		{`a\*`, "ab", false},
	} {
		if got := redisacl.Match(c.pat, c.key); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pat, c.key, got, c.want)
		}
	}
}
