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
// its replies are never capped. A Stream reads through the guarded copy: when
// the guard refuses a reply, it reads the same entries again with Scan, a Lua
// script (EVALSHA_RO) that checks each entry's size in Redis and returns an
// oversized entry's id, size and short fields, never its data, and it reads
// with Scan until it has caught up, then blocks again. A client it cannot copy
// (a Ring, a wrapper) is never guarded: a Stream then polls with Scan instead
// of blocking.
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
