package service

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/blockread"
)

// What a service's components get from their instance (a Service that
// implements Binder has it from New on): the instance's Redis client, a
// client for blocking reads that a context ends, the context that ends when
// the instance begins to leave, and the logger (Instance.Logger).

// Leaving returns a context that ends when the instance begins to leave
// running for good, and never before:
//
//   - at the moment a stop or a restart is asked for (RequestStop, Shutdown,
//     the end of Run's context, a signal under process.Main, RequestRestart,
//     a restart op), in any phase, before any drain delay (WithDrainDelay,
//     SG_DRAIN_DELAY);
//   - when something fails the instance (a boot phase, Service.Run);
//   - when Service.Run returns on its own.
//
// It ends no later than the context Service.Run gets, which a drain delay
// keeps alive that much longer: a component stops taking new work when
// Leaving ends and finishes the work in hand under Run's context (see
// examples/orders in the repository). context.Cause says why, for a log
// line.
//
// A drain op (Drain, `sgctl drain`) does not end it: the instance leaves
// rotation, not its work, and Undrain brings it back, which a context
// cannot follow. A component that must follow drain ops reads State, or
// observes the transitions (WithTransitionObserver).
//
// The context holds no goroutine and may be used from Bind on; the same
// context is returned every time.
func (in *Instance) Leaving() context.Context { return in.leaving }

// Redis returns the Redis client the instance uses for its ping, registry
// entry and control channel: the one given with WithRedis or, under
// process.Main, the one Main built from REDIS_URL (which wins over
// WithRedis); nil without either. It may be used from Bind on, and shares
// its connection pool, and its Redis user, with the instance's own calls:
// under the least-privilege sg-instance role (docs/redis-acl.md in the
// repository) the service's own commands and keys need rules of their own
// on that user (examples/orders gives its line).
//
// The instance does not own it, and neither does the service: do not Close
// it. Whoever built it closes it once the instance stopped: Main closes
// REDIS_URL's as it exits; a client given with WithRedis is its giver's.
//
// It carries no deadline of the instance's: SG_REDIS_TIMEOUT
// (WithRedisTimeout) bounds only the instance's own calls, through their
// contexts. Bound yours with your context: Main's client has
// ContextTimeoutEnabled, so a context's deadline reaches the socket; without
// a deadline go-redis's timeouts apply (dial 5s, read and write 3s, unless
// REDIS_URL sets dial_timeout, read_timeout or write_timeout; a blocking
// command waits its block time and 10s more). A context's
// cancellation (as opposed to its deadline) does not end a read blocked in
// Redis (XREAD or XREADGROUP with BLOCK, BLPOP): such a read holds until
// its block time (go-redis#2556); make blocking reads through
// BlockingRedis.
func (in *Instance) Redis() redis.UniversalClient { return in.cfg.redis }

// BlockingRedis returns a Redis client for blocking reads (XREAD and
// XREADGROUP with BLOCK, BLPOP, BRPOP, ...) that is closed as soon as ctx
// ends: a read blocked in it then returns at once with an error (the
// read's context's, or redis.ErrClosed), where the same read through Redis
// would hold until its block time, whatever its context, since go-redis
// ends a blocked read only at a deadline. Give it the context that must end
// the reads: for a worker
// that stops taking work as the instance leaves, one that Leaving ends.
// ctx must end; after that the client only fails.
//
// Each call returns a new client with Redis's options (addresses,
// credentials, TLS, timeouts), keeping no idle connection and without the
// hooks added to Redis with AddHook. A command that Redis executed as the
// client closed has lost its reply: an XREADGROUP cut short that way may
// have delivered an entry, which stays pending for the consumer, to be read
// again with ID 0 (or claimed with XAUTOCLAIM). Use it for reads, and
// Redis for the rest.
//
// A client it cannot copy (a Ring, a type of your own) is returned as it is
// and never closed: a read blocked in it ends only at its block time.
// BlockingRedis returns nil without Redis.
func (in *Instance) BlockingRedis(ctx context.Context) redis.UniversalClient {
	if in.cfg.redis == nil {
		return nil
	}
	c, own := blockread.NewClient(in.cfg.redis, blockread.Retry, blockread.Limits{}) // the service's own data: not capped
	if own {
		context.AfterFunc(ctx, func() { _ = c.Close() })
	}
	return c
}
