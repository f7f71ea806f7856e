package registry

import (
	"context"
	"slices"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/slotmap"
)

// scriptCall is one call of a Lua script queued on a pipeline, kept so that
// it can be sent again.
type scriptCall struct {
	s    *redis.Script
	keys []string
	args []any
	cmd  *redis.Cmd
}

// queue adds the call to pipe: by its SHA1 (EVALSHA), or with the script's
// text (EVAL) when text is set.
func (c *scriptCall) queue(ctx context.Context, pipe redis.Pipeliner, text bool) {
	if text {
		c.cmd = c.s.Eval(ctx, pipe, c.keys, c.args...)
		return
	}
	c.cmd = c.s.EvalSha(ctx, pipe, c.keys, c.args...)
}

// newCall queues s on pipe by its SHA1, except the registry's first call of
// s, which carries the text: a process's first writes (its boot) then cost no
// NOSCRIPT round trip on a Redis that never ran the script. With scriptText
// every call carries the text (tests compare the two).
func (r *Registry) newCall(ctx context.Context, pipe redis.Pipeliner, s *redis.Script, keys []string, args ...any) *scriptCall {
	c := &scriptCall{s: s, keys: keys, args: args}
	first := false
	if f, ok := r.sentText[s]; ok {
		first = f.CompareAndSwap(false, true)
	}
	c.queue(ctx, pipe, r.cfg.scriptText || first)
	return c
}

// exec runs pipe, on which calls were queued by SHA1, and returns its
// commands and the error of the first that failed (or of the round trip).
//
// A pipeline cannot fall back to EVAL by itself when Redis answers NOSCRIPT
// (it lost its script cache: a restart, a failover to a replica that never
// ran the script, SCRIPT FLUSH). exec then sends the calls that got NOSCRIPT
// again, with their text, in a second round trip; Redis caches them for the
// next writes. The other commands of pipe are not repeated: a pipeline is
// not a transaction, they ran. Sending scripts by SHA1 keeps each write a few
// dozen bytes instead of the script's text, which Redis would otherwise read
// and hash on every write.
//
// A failure that says a cluster's slot map is stale asks the client to reload
// it (slotmap.Reload).
func (r *Registry) exec(ctx context.Context, pipe redis.Pipeliner, calls ...*scriptCall) ([]redis.Cmder, error) {
	cmds, err := pipe.Exec(ctx)
	var redo []*scriptCall
	for _, c := range calls {
		if c != nil && c.cmd != nil && redis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
			redo = append(redo, c)
		}
	}
	if len(redo) > 0 {
		cmds = slices.Clone(cmds)
		retry := r.c.Pipeline()
		for _, c := range redo {
			i := slices.Index(cmds, redis.Cmder(c.cmd))
			c.queue(ctx, retry, true)
			if i >= 0 {
				cmds[i] = c.cmd
			}
		}
		_, rerr := retry.Exec(ctx)
		err = rerr
		for _, c := range cmds {
			if c.Err() != nil {
				err = c.Err()
				break
			}
		}
	}
	if err != nil {
		slotmap.Reload(r.c, err)
	}
	return cmds, err
}

// failed asks a cluster client to reload its slot map when err says it may
// be stale (slotmap.Reload), and returns err.
func (r *Registry) failed(err error) error {
	if err != nil {
		slotmap.Reload(r.c, err)
	}
	return err
}
