// Package slotmap keeps a Redis Cluster client's slot map current through a
// failover, for the registry and the control-ops daemon (which share it
// without importing each other).
//
// go-redis reloads a ClusterClient's slot map when a node answers MOVED or
// READONLY, and otherwise only every ClusterStateReloadInterval (a minute by
// default). When a master dies nothing answers MOVED: every command for its
// slots fails with a connection error, and the client keeps dialling the
// dead address until the periodic reload, long after a replica took the
// slots over. The instance's entry expires meanwhile and its control ops go
// unread.
//
// Reload closes that gap: after a command fails in a way that says the map
// may be stale (Stale), it asks the client to reload its map at once
// (ClusterClient.ReloadState, which reloads in the background), at most once
// per MinInterval per client, so a fleet of callers failing together costs
// each Redis node one CLUSTER SLOTS per client and interval. Callers retry
// on their own schedule; the first retry after the promotion reaches the new
// master. For other clients (a single server, a Sentinel failover client,
// which follows the Sentinel by itself) Reload does nothing.
package slotmap

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"weak"

	"github.com/redis/go-redis/v9"
)

// MinInterval is the least time between two reloads of one client's map.
const MinInterval = 500 * time.Millisecond

// Stale reports whether err says that the node a command went to may no
// longer serve its slot: a network error (refused, reset, EOF, a timeout,
// including a context deadline), or a MOVED, CLUSTERDOWN or READONLY reply.
// context.Canceled is not: the caller gave up. nil is not.
func Stale(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if _, moved := redis.IsMovedError(err); moved {
		return true
	}
	if redis.IsClusterDownError(err) || redis.IsReadOnlyError(err) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) ||
		errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}

// Reload asks c to reload its slot map when c is a *redis.ClusterClient and
// err is Stale, unless it did so for c less than MinInterval ago. It never
// blocks: the reload runs on go-redis's own goroutine, and commands meanwhile
// use the old map.
//
// It reports whether c is a cluster client and err Stale: then the map is
// being reloaded, or was less than MinInterval ago, and a retry MinInterval
// later goes by a map read after the failure.
func Reload(c redis.UniversalClient, err error) bool {
	cc, ok := c.(*redis.ClusterClient)
	if !ok || cc == nil || !Stale(err) {
		return false
	}
	last := lastReload(cc)
	now := now().UnixNano()
	prev := last.Load()
	if prev != 0 && now-prev < int64(MinInterval) {
		return true
	}
	if last.CompareAndSwap(prev, now) { // else another caller reloads it now
		reload(cc)
	}
	return true
}

// reload asks go-redis to reload c's map; tests count the calls.
var reload = func(c *redis.ClusterClient) { c.ReloadState(context.Background()) }

// now is the clock of the rate limit; tests replace it.
var now = time.Now

// reloads holds, per live client, when Reload last asked it to reload. Keys
// are weak: an entry goes when its client is garbage collected.
var reloads sync.Map // weak.Pointer[redis.ClusterClient] -> *atomic.Int64 (unix ns)

func lastReload(c *redis.ClusterClient) *atomic.Int64 {
	k := weak.Make(c)
	if v, ok := reloads.Load(k); ok {
		return v.(*atomic.Int64)
	}
	v, loaded := reloads.LoadOrStore(k, new(atomic.Int64))
	if !loaded {
		runtime.AddCleanup(c, func(k weak.Pointer[redis.ClusterClient]) { reloads.Delete(k) }, k)
	}
	return v.(*atomic.Int64)
}
