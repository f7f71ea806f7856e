// Package blockread gives a component that reads a Redis stream a client of
// its own, and reads the stream so that no entry larger than the component
// allows is ever loaded into the process.
//
// A client of its own: go-redis does not end a blocked read when the read's
// context ends (go-redis#2556), so a component that must stop promptly (the
// control-ops daemon at S1, a registry Watcher's Close) reads through a copy
// of the client it was given and closes the copy: closing it ends the blocked
// read at once. The copy keeps no idle connections, no push-notification
// state and no client-side cache.
//
// Bounded reads: whoever can write a stream can append an entry of hundreds
// of megabytes, and XREAD BLOCK, the one way to wait for new entries without
// polling, returns the entries it found whatever their size; go-redis
// allocates a bulk string's whole length as soon as it reads its header. So
// the copy's connections are guarded (guard.go): a net.Conn wrapper, installed
// with a go-redis DialHook, follows the RESP reply stream as it passes and
// fails the read, closing the connection, before go-redis sees the header of
// a bulk string or an aggregate larger than the Limits, or once a reply passes
// its byte budget. The guard is on the copy only: the caller's own client and
// its replies are never capped.
//
// A refusal says where it happened (the trail: the aggregates open, with the
// first element of each, which for a stream entry is its id). A Stream reads
// through the guarded copy, and when a reply is refused it reads again, with
// a non-blocking XREAD (a range read, with XRANGE or XREVRANGE), only the
// entries that came before the refused one, reports that
// one as oversized (its id and what was too large), and the next read starts
// after it. No script runs, Redis prepares no entry twice but those before a
// refused one, and a reader needs no permission beyond reading the stream.
// A position to start from is the last entry's id (Stream.Last, through the
// guard), or, for a reader that asks often, Redis's clock (Position), which
// reads no entry at all.
//
// A client it cannot copy (a Ring, a wrapper) is never guarded: a Stream then
// polls with Scan, a read-only Lua script that sizes each entry in Redis and
// returns an oversized one as its id, size and short fields. Scan costs Redis
// copies of every oversized entry it sizes, into the script (0.7 s of Redis's
// time for 100 MB on a loaded 2-core machine, against 0.11 s for an XRANGE
// of it), which is why the guarded path does without it.
//
// What no client can spare Redis: XREAD BLOCK serves every blocked reader
// with its own copy of a new entry, at once (20 readers and one 100 MB entry:
// a 2.4 GB peak in Redis and 2.8 s of its CPU, although each reader closed
// its connection after 32 KB). Bound the entries Redis accepts
// (proto-max-bulk-len, client-query-buffer-limit) and who may write the
// streams (ACL).
package blockread

import (
	"context"
	"net"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Retries says whether a single-server copy retries a command that lost its
// connection (go-redis's MaxRetries), or reports it: a reader that must see
// every reconnect (to resync after it) wants NoRetry.
type Retries bool

const (
	// Retry keeps the original client's retries.
	Retry Retries = true
	// NoRetry makes a lost connection an error the reader sees.
	NoRetry Retries = false
)

// NewClient returns a client of the caller's own for blocking reads, copied
// from rdb's options, and own = true: the caller closes it. It copies a
// *redis.Client (a single server or a failover client) or a
// *redis.ClusterClient (whose MaxRedirects stay: MOVED after a failover
// needs them). Every connection of the copy is guarded by lim (see the
// package documentation); a zero Limits guards nothing. Any other client is
// returned as it is with own = false, unguarded: the caller must not close
// it, and a blocked read through it ends only at its block time.
func NewClient(rdb redis.UniversalClient, retries Retries, lim Limits) (reader redis.UniversalClient, own bool) {
	var hook redis.Hook
	if lim != (Limits{}) {
		hook = dialGuard{lim.guard()}
	}
	switch c := rdb.(type) {
	case *redis.Client:
		o := *c.Options()
		o.MinIdleConns = 0
		if !retries {
			o.MaxRetries = -1
		}
		o.PushNotificationProcessor = nil
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		o.ClientSideCache, o.ClientSideCacheConfig = nil, nil
		cc := redis.NewClient(&o)
		if hook != nil {
			cc.AddHook(hook)
		}
		return cc, true
	case *redis.ClusterClient:
		o := *c.Options()
		o.MinIdleConns = 0
		o.PushNotificationProcessor = nil
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		cc := redis.NewClusterClient(&o)
		if hook != nil {
			// Node clients are made on first use, after this.
			cc.OnNewNode(func(n *redis.Client) { n.AddHook(hook) })
		}
		return cc, true
	}
	return rdb, false
}

// dialGuard is the go-redis hook that wraps every connection the copy dials.
type dialGuard struct{ lim guardLimits }

func (g dialGuard) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return guard(conn, g.lim), nil
	}
}

func (dialGuard) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (dialGuard) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
