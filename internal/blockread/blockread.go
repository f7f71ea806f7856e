// Package blockread gives a component that blocks in XREAD a Redis client of
// its own. go-redis does not end a blocked read when the read's context ends
// (go-redis#2556), so a component that must stop promptly (the control-ops
// daemon at S1, a registry Watcher's Close) reads through a copy of the
// client it was given and closes the copy: closing it ends the blocked read at
// once. The copy keeps no idle connections, no push-notification state and no
// client-side cache: it only reads a stream.
package blockread

import (
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
// needs them). Any other client is returned as it is with own = false: the
// caller must not close it, and a blocked read through it ends only at its
// block time.
func NewClient(rdb redis.UniversalClient, retries Retries) (reader redis.UniversalClient, own bool) {
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
		return redis.NewClient(&o), true
	case *redis.ClusterClient:
		o := *c.Options()
		o.MinIdleConns = 0
		o.PushNotificationProcessor = nil
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		return redis.NewClusterClient(&o), true
	}
	return rdb, false
}
