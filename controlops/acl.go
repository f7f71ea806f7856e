// Redis refusing a call for want of permission (NOPERM): the errors name
// the rule of docs/redis-acl.md that the call needed, and a Client can ask,
// without sending anything, whether its user may send ops.

package controlops

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/slotmap"
)

// ErrNoPermission matches (errors.Is) the errors of calls Redis refused for
// want of permission (NOPERM): the Redis user lacks a rule of its role's
// line in docs/redis-acl.md, which the error names. A Daemon's calls belong
// to the sg-instance role, a Client's to sg-operator. It is the same value
// as registry.ErrNoPermission.
var ErrNoPermission = redisacl.ErrNoPermission

// PermissionError is a call of a Client that Redis refused for want of
// permission: the operator's Redis user cannot send ops, or cannot follow
// their results. It matches ErrNoPermission.
type PermissionError struct {
	// Can is what the user cannot do: "send control ops", "follow the
	// results of control ops".
	Can string
	// Call is the refused call: "XADD to sg:control:{demo}".
	Call string
	// Err is Redis's refusal, explained: it names the rule of the
	// sg-operator role that the call needed.
	Err error
}

func (e *PermissionError) Error() string {
	return fmt.Sprintf("this Redis user cannot %s (%s refused): use the %s role: %v", e.Can, e.Call, redisacl.Operator, e.Err)
}

// Unwrap returns the explained refusal.
func (e *PermissionError) Unwrap() error { return e.Err }

// operatorRefusal returns err as a *PermissionError when Redis refused the
// call (cmd on key) for want of permission, and nil otherwise.
func operatorRefusal(err error, can, cmd, prep, key string) error {
	if !redisacl.Refused(err) {
		return nil
	}
	return &PermissionError{Can: can, Call: cmd + " " + prep + " " + key, Err: refused(redisacl.Operator, err, cmd, key)}
}

// refused explains err as a refusal of role's cmd on keys (see redisacl),
// or returns it as it is.
func refused(role redisacl.Role, err error, cmd string, keys ...string) error {
	return redisacl.Explain(err, role, redisacl.Call{Cmd: cmd, Keys: keys})
}

// probeID is an XADD id Redis refuses whatever the user (ids start above
// 0-0), after checking the user's permissions: an XADD with it writes
// nothing and answers either NOPERM or "ERR The ID specified in XADD must
// be greater than 0-0".
const probeID = "0-0"

// queueWriteProbe queues, on pipe, an XADD to stream that writes nothing
// (NOMKSTREAM, an id Redis refuses): its reply says whether the user may
// XADD to stream.
func queueWriteProbe(ctx context.Context, pipe redis.Pipeliner, stream string) *redis.StringCmd {
	return pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, NoMkStream: true, ID: probeID, Values: []any{"probe", "1"}})
}

// writeProbeErr returns the explained refusal when the probe's reply is
// one (Redis checks permissions before the id), Redis's failure when it did
// not answer, and nil otherwise: the id's refusal (probeRefusal) as
// expected, or any other reply, which says nothing about permissions.
func writeProbeErr(role redisacl.Role, cmd *redis.StringCmd, stream string) error {
	err := cmd.Err()
	var reply redis.Error
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		return nil
	case redisacl.Refused(err):
		return fmt.Errorf("XADD %s: %w", stream, refused(role, err, "XADD", stream))
	case errors.As(err, &reply):
		return nil
	}
	return fmt.Errorf("XADD %s: %w", stream, err)
}

// What a PermissionError says the user cannot do.
const (
	canSend   = "send control ops"
	canFollow = "follow the results of control ops"
)

// CheckPermission tells, without sending an op, whether this client's Redis
// user may send ops to service and follow their results: in one round trip,
// an XADD to sg:control:{<service>} that Redis refuses whatever the user (id
// 0-0, NOMKSTREAM: it writes nothing; Redis checks permissions first) and a
// non-blocking XREAD of sg:control:results:{<service>}. It returns nil when
// both are permitted; a *PermissionError (matching ErrNoPermission), naming
// the command and key refused and the sg-operator role's rule, when one is
// not; and Redis's error when it failed otherwise.
//
// A user without the permission shows the probe in Redis's ACL LOG (a
// refused xadd; entries of one kind are counted in one line).
func (c *Client) CheckPermission(ctx context.Context, service string) error {
	stream, results := StreamKey(service), ResultsKey(service)
	pipe := c.rdb.Pipeline()
	add := queueWriteProbe(ctx, pipe, stream)
	read := pipe.XRead(ctx, &redis.XReadArgs{Streams: []string{results, "$"}, Count: 1, Block: -1})
	_, _ = pipe.Exec(ctx) // each command has its own reply (a connection failure sets every one's)
	if err := operatorRefusal(add.Err(), canSend, "XADD", "to", stream); err != nil {
		return err
	}
	if err := operatorRefusal(read.Err(), canFollow, "XREAD", "of", results); err != nil {
		return err
	}
	if perr := writeProbeErr(redisacl.Operator, add, stream); perr != nil {
		slotmap.Reload(c.rdb, perr)
		return fmt.Errorf("controlops: checking permissions: %w", perr)
	}
	if rerr := read.Err(); rerr != nil && !errors.Is(rerr, redis.Nil) {
		slotmap.Reload(c.rdb, rerr)
		return fmt.Errorf("controlops: checking permissions: XREAD %s: %w", results, rerr)
	}
	return nil
}
