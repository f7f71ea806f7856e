package service

import "github.com/redis/go-redis/v9"

// honoursDeadlines reports whether go-redis applies context deadlines to c's
// sockets (ContextTimeoutEnabled). Clients it cannot inspect are assumed to.
func honoursDeadlines(c redis.UniversalClient) bool {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return true
}
