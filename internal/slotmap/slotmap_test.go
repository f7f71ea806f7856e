package slotmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStaleNamesTheErrorsOfAMovedOrDeadMaster(t *testing.T) {
	ctx := context.Background()
	dead := redis.NewClient(&redis.Options{Addr: redistest.RefusedAddr(t), MaxRetries: -1, DialerRetries: 1})
	defer dead.Close()
	refused := dead.Ping(ctx).Err()
	if refused == nil {
		t.Fatal("PING to a closed port succeeded")
	}
	// A real READONLY reply: a write sent to a replica.
	master := redistest.Server(t)
	replica := redistest.Server(t, "--replicaof", "127.0.0.1", fmt.Sprint(master.Port()))
	readonly := replica.Client(t).Set(ctx, "k", "v", 0).Err()

	for _, c := range []struct {
		name  string
		err   error
		stale bool
	}{
		{"connection refused", refused, true},
		{"connection refused, wrapped", fmt.Errorf("registry: heartbeat of x: %w", refused), true},
		{"READONLY from a replica, wrapped", fmt.Errorf("registry: writing x: %w", readonly), true},
		{"MOVED", errors.New("MOVED 3999 127.0.0.1:6381"), true},
		{"CLUSTERDOWN", errors.New("CLUSTERDOWN The cluster is down"), true},
		{"timeout", &net.OpError{Op: "read", Net: "tcp", Err: timeoutErr{}}, true},
		{"context deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{"caller cancelled", fmt.Errorf("x: %w", context.Canceled), false},
		{"WRONGTYPE", errors.New("WRONGTYPE Operation against a key holding the wrong kind of value"), false},
		{"nil", nil, false},
	} {
		if got := Stale(c.err); got != c.stale {
			t.Errorf("%s: Stale(%v) = %v, want %v", c.name, c.err, got, c.stale)
		}
	}
	if !redis.IsReadOnlyError(readonly) {
		t.Errorf("SET on a replica = %v, want READONLY", readonly)
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestReloadAsksAClusterClientAtMostOncePerInterval(t *testing.T) {
	clock := time.Unix(1000, 0)
	now = func() time.Time { return clock }
	asked := map[*redis.ClusterClient]int{}
	reload = func(c *redis.ClusterClient) { asked[c]++ }
	t.Cleanup(func() {
		now = time.Now
		reload = func(c *redis.ClusterClient) { c.ReloadState(context.Background()) }
	})
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{redistest.RefusedAddr(t)}, MaxRetries: -1})
	defer cc.Close()
	other := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{redistest.RefusedAddr(t)}, MaxRetries: -1})
	defer other.Close()
	stale := errors.New("CLUSTERDOWN The cluster is down")

	if Reload(cc, errors.New("WRONGTYPE Operation against a key holding the wrong kind of value")) || asked[cc] != 0 {
		t.Fatalf("Reload after WRONGTYPE asked for a reload (%d)", asked[cc])
	}
	if !Reload(cc, stale) || asked[cc] != 1 {
		t.Fatalf("first Reload after CLUSTERDOWN: asked %d times, want 1", asked[cc])
	}
	clock = clock.Add(MinInterval - time.Millisecond)
	if !Reload(cc, stale) {
		t.Fatal("Reload within the interval says the map is not being reloaded")
	}
	if asked[cc] != 1 {
		t.Fatalf("Reload %v after the last asked again", MinInterval-time.Millisecond)
	}
	if !Reload(other, stale) || asked[other] != 1 {
		t.Fatal("the limit of one client held back another client")
	}
	clock = clock.Add(time.Millisecond)
	if !Reload(cc, stale) || asked[cc] != 2 {
		t.Fatalf("Reload %v after the last: asked %d times, want 2", MinInterval, asked[cc])
	}
}

func TestReloadLeavesOtherClientsAlone(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: redistest.RefusedAddr(t)})
	defer c.Close()
	if Reload(c, errors.New("CLUSTERDOWN The cluster is down")) {
		t.Fatal("Reload asked a non-cluster client to reload")
	}
	if Reload(nil, errors.New("CLUSTERDOWN The cluster is down")) {
		t.Fatal("Reload asked a nil client to reload")
	}
}
