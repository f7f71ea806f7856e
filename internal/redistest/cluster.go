package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Redis Cluster of local nodes: Cluster and its nodes.

// ClusterSrv is a Redis Cluster on loopback: three masters (Cluster), or
// three masters with a replica each (ClusterWithReplicas).
type ClusterSrv struct {
	nodes    []*Srv
	replicas bool
}

// Cluster starts three redis-server masters with --cluster-enabled yes (each
// in its own directory with its own cluster-config-file), joins them with
// `redis-cli --cluster create --cluster-yes` so the 16384 slots are split
// between them, and waits until every node reports cluster_state:ok. It takes
// about three seconds. All nodes are killed by t.Cleanup.
func Cluster(tb testing.TB) *ClusterSrv {
	tb.Helper()
	cli := requireBinary(tb, "redis-cli")
	bin := requireBinary(tb, "redis-server")
	c := &ClusterSrv{}
	for i := 0; i < 3; i++ {
		c.nodes = append(c.nodes, startClusterNode(tb, bin, 2*time.Second))
	}
	args := []string{"--cluster", "create"}
	for _, n := range c.nodes {
		args = append(args, n.Addr())
	}
	args = append(args, "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := c.waitOK(); err != nil {
		tb.Fatalf("redistest: cluster %v: %v\n%s", c.Addrs(), err, out)
	}
	return c
}

// startClusterNode starts one --cluster-enabled node with the given
// cluster-node-timeout and extra arguments.
func startClusterNode(tb testing.TB, bin string, nodeTimeout time.Duration, extraArgs ...string) *Srv {
	tb.Helper()
	dir := tb.TempDir()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort(true)
		if err != nil {
			tb.Fatalf("redistest: finding a free port: %v", err)
		}
		s := &Srv{tb: tb, bin: bin, dir: dir, port: port, logPath: filepath.Join(dir, "redis.log"),
			args: append([]string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-node-timeout", strconv.FormatInt(nodeTimeout.Milliseconds(), 10),
			}, extraArgs...)}
		_ = os.Remove(s.logPath)
		_ = os.Remove(filepath.Join(dir, "nodes.conf"))
		if lastErr = s.start(); lastErr == nil {
			tb.Cleanup(s.Kill)
			return s
		}
		if !errors.Is(lastErr, errAddrInUse) {
			break
		}
	}
	tb.Fatalf("redistest: starting cluster node: %v", lastErr)
	return nil
}

// waitOK polls CLUSTER INFO on every node until all say cluster_state:ok.
func (c *ClusterSrv) waitOK() error {
	deadline := time.Now().Add(StartTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for _, n := range c.nodes {
		cl := redis.NewClient(&redis.Options{Addr: n.Addr()})
		var info string
		var err error
		for {
			info, err = cl.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				_ = cl.Close()
				if err == nil {
					err = fmt.Errorf("node %s: no cluster_state:ok within %v:\n%s", n.Addr(), StartTimeout, info)
				}
				return err
			}
			// Polling interval; the deadline bounds the wait.
			time.Sleep(20 * time.Millisecond)
		}
		_ = cl.Close()
	}
	return nil
}

// Addrs returns the nodes' "127.0.0.1:port" addresses: the three masters of
// Cluster; the six nodes, masters and replicas, of ClusterWithReplicas.
func (c *ClusterSrv) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// URL returns the cluster's REDIS_URL: "redis://" the first node, with an
// addr= parameter for each other one.
func (c *ClusterSrv) URL() string {
	addrs := c.Addrs()
	u := "redis://" + addrs[0]
	for i, a := range addrs[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + a
	}
	return u
}

// Nodes returns the nodes, e.g. to Kill one: the three masters of Cluster; the
// six nodes of ClusterWithReplicas (MasterOf says which serves a key).
func (c *ClusterSrv) Nodes() []*Srv { return c.nodes }

// Client returns a cluster client seeded with all nodes, closed by t.Cleanup.
func (c *ClusterSrv) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	tb.Cleanup(func() { _ = cl.Close() })
	return cl
}
