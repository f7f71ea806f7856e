package lifecycle

import (
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisAddr names the server(s) of c for errors and logs, without
// credentials: "127.0.0.1:6379", or the cluster seeds "a:1,b:2".
func redisAddr(c redis.UniversalClient) string {
	var addrs []string
	switch c := c.(type) {
	case *redis.Client:
		o := c.Options()
		if o.Network == "unix" {
			addrs = []string{"unix:" + o.Addr}
		} else {
			addrs = []string{o.Addr}
		}
	case *redis.ClusterClient:
		addrs = slices.Clone(c.Options().Addrs)
	case *redis.Ring:
		for _, a := range c.Options().Addrs {
			addrs = append(addrs, a)
		}
		slices.Sort(addrs)
	}
	if len(addrs) == 0 {
		return "(address unknown)"
	}
	for i, a := range addrs {
		addrs[i] = redactAddr(a)
	}
	return strings.Join(addrs, ",")
}

// redactAddr removes the user information an address may carry
// ("user:secret@host:port" becomes "host:port"), so that an address is safe
// to print.
func redactAddr(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return addr
}

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
