package registry

import (
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// newReader returns a client of its own for a Watcher's blocking reads, so
// that Close can close it and end a blocked XREAD at once: go-redis does not
// interrupt a blocked read when its context ends. It copies a *redis.Client
// (a single server or a failover client) or a *redis.ClusterClient; other
// clients are shared (own is false), and Close then waits up to the block
// time. The copy keeps no idle connections, no push-notification state and
// no client-side cache: it only reads the stream. A single-server copy does
// not retry a command: a read that lost its connection (a Redis restart, a
// failover) is an error the Watcher sees, and resyncs after.
func newReader(rdb redis.UniversalClient) (reader redis.UniversalClient, own bool) {
	switch c := rdb.(type) {
	case *redis.Client:
		o := *c.Options()
		o.MinIdleConns, o.MaxRetries = 0, -1
		o.PushNotificationProcessor = nil
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		o.ClientSideCache, o.ClientSideCacheConfig = nil, nil
		return redis.NewClient(&o), true
	case *redis.ClusterClient:
		o := *c.Options()
		o.MinIdleConns = 0 // MaxRedirects stays: MOVED after a failover needs it
		o.PushNotificationProcessor = nil
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		return redis.NewClusterClient(&o), true
	}
	return rdb, false
}
