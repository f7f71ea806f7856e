package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// FailoverTimeout bounds how long WaitFailover and WaitPromoted wait for a
// replica to take over from a killed master. A failover takes about 2 s with
// the timeouts this package configures.
const FailoverTimeout = 30 * time.Second

// Timeouts of the failover set-ups, small so that a failover takes a second or
// two rather than the production defaults' 30 s and more.
const (
	// SentinelDownAfter is Sentinel's down-after-milliseconds: how long a
	// master may be silent before Sentinel calls it down.
	SentinelDownAfter = 500 * time.Millisecond
	// SentinelFailoverTimeout is Sentinel's failover-timeout.
	SentinelFailoverTimeout = 2 * time.Second
	// ReplicaClusterNodeTimeout is the cluster-node-timeout of
	// ClusterWithReplicas: how long a master may be unreachable before its
	// replica starts an election.
	ReplicaClusterNodeTimeout = time.Second
)

// replicationArgs make a replica's first sync immediate: Redis 7 waits 5 s by
// default before a diskless sync, for more replicas to join it.
var replicationArgs = []string{"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"}

// SentinelSet is a Redis master, one replica of it and a Sentinel that
// monitors them, all on loopback. Kill the master (Master().Kill()) and the
// Sentinel promotes the replica within about two seconds.
type SentinelSet struct {
	tb       testing.TB
	name     string
	nodes    []*Srv // the master and the replica, as started
	sentinel *Srv
}

// SentinelMasterName is the name under which the Sentinel of a SentinelSet
// monitors its master (FailoverOptions.MasterName).
const SentinelMasterName = "sgmaster"

// Sentinel starts a master, a replica of it (waiting until its replication
// link is up) and a Sentinel (redis-server --sentinel with a config file it
// generates in a t.TempDir()) monitoring the master under
// SentinelMasterName with quorum 1, down-after-milliseconds
// SentinelDownAfter and failover-timeout SentinelFailoverTimeout. It returns
// once the Sentinel knows the replica, so a failover can begin at once. All
// three processes are killed by t.Cleanup; when the test failed, the tail of
// each one's log is logged.
func Sentinel(tb testing.TB) *SentinelSet {
	tb.Helper()
	bin := requireBinary(tb, "redis-server")
	s := &SentinelSet{tb: tb, name: SentinelMasterName}
	master := Server(tb, replicationArgs...)
	replica := Server(tb, append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(master.Port())}, replicationArgs...)...)
	s.nodes = []*Srv{master, replica}
	tb.Cleanup(func() { logTailsIfFailed(tb, s.all()...) })
	if err := waitLinkUp(replica); err != nil {
		tb.Fatalf("redistest: replica %s of %s: %v", replica.Addr(), master.Addr(), err)
	}
	s.sentinel = startSentinel(tb, bin, s.name, master)
	if err := s.waitKnowsReplica(); err != nil {
		tb.Fatalf("redistest: sentinel %s: %v", s.sentinel.Addr(), err)
	}
	return s
}

func (s *SentinelSet) all() []*Srv {
	out := append([]*Srv(nil), s.nodes...)
	if s.sentinel != nil {
		out = append(out, s.sentinel)
	}
	return out
}

func startSentinel(tb testing.TB, bin, name string, master *Srv) *Srv {
	tb.Helper()
	dir := tb.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort(false)
		if err != nil {
			tb.Fatalf("redistest: finding a free port: %v", err)
		}
		// Rewritten on every attempt: Sentinel records what it learns in it.
		text := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 1\n"+
			"sentinel down-after-milliseconds %[1]s %[3]d\n"+
			"sentinel failover-timeout %[1]s %[4]d\n"+
			"sentinel parallel-syncs %[1]s 1\n",
			name, master.Port(), SentinelDownAfter.Milliseconds(), SentinelFailoverTimeout.Milliseconds())
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			tb.Fatalf("redistest: writing %s: %v", conf, err)
		}
		s := &Srv{tb: tb, bin: bin, dir: dir, port: port, conf: conf, logPath: filepath.Join(dir, "sentinel.log")}
		_ = os.Remove(s.logPath)
		if lastErr = s.start(); lastErr == nil {
			tb.Cleanup(s.Kill)
			return s
		}
		if !errors.Is(lastErr, errAddrInUse) {
			break
		}
	}
	tb.Fatalf("redistest: starting sentinel: %v", lastErr)
	return nil
}

// waitKnowsReplica polls SENTINEL REPLICAS until the Sentinel lists a replica
// that is neither down nor disconnected: before that, a failover finds no
// replica to promote.
func (s *SentinelSet) waitKnowsReplica() error {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.sentinel.Addr()})
	defer c.Close()
	deadline := time.Now().Add(StartTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for {
		reps, err := c.Replicas(ctx, s.name).Result()
		if err == nil {
			for _, r := range reps {
				if f := r["flags"]; f == "slave" && r["master-link-status"] == "ok" {
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no usable replica of %s listed within %v (last %v, %v)", s.name, StartTimeout, reps, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval; the deadline bounds the wait
	}
}

// waitLinkUp polls INFO replication on replica until master_link_status:up.
func waitLinkUp(replica *Srv) error {
	c := redis.NewClient(&redis.Options{Addr: replica.Addr()})
	defer c.Close()
	deadline := time.Now().Add(StartTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for {
		info, err := c.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replication link not up within %v: %v\n%s", StartTimeout, err, info)
		}
		time.Sleep(20 * time.Millisecond) // polling interval; the deadline bounds the wait
	}
}

// MasterName returns the name the Sentinel monitors the master under.
func (s *SentinelSet) MasterName() string { return s.name }

// SentinelAddrs returns the Sentinel's "127.0.0.1:port" (one).
func (s *SentinelSet) SentinelAddrs() []string { return []string{s.sentinel.Addr()} }

// URL returns the set's REDIS_URL in go-redis's Sentinel form:
// "redis://127.0.0.1:<sentinel port>/0?master_name=sgmaster".
func (s *SentinelSet) URL() string {
	return "redis://" + s.sentinel.Addr() + "/0?master_name=" + s.name
}

// SentinelServer returns the Sentinel process.
func (s *SentinelSet) SentinelServer() *Srv { return s.sentinel }

// Nodes returns the master and the replica as they were started (roles
// change after a failover; Master says which is master now).
func (s *SentinelSet) Nodes() []*Srv { return s.nodes }

// Master returns the node the Sentinel names as master now.
func (s *SentinelSet) Master() *Srv {
	s.tb.Helper()
	addr, err := s.masterAddr(context.Background())
	if err != nil {
		s.tb.Fatalf("redistest: asking sentinel %s for the master: %v", s.sentinel.Addr(), err)
	}
	for _, n := range s.nodes {
		if n.Addr() == addr {
			return n
		}
	}
	s.tb.Fatalf("redistest: sentinel names master %s, which is none of %v", addr, s.nodes)
	return nil
}

func (s *SentinelSet) masterAddr(ctx context.Context) (string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.sentinel.Addr()})
	defer c.Close()
	a, err := c.GetMasterAddrByName(ctx, s.name).Result()
	if err != nil {
		return "", err
	}
	if len(a) != 2 {
		return "", fmt.Errorf("GET-MASTER-ADDR-BY-NAME %s answered %v", s.name, a)
	}
	return a[0] + ":" + a[1], nil
}

// FailoverClient returns a go-redis failover client of the set
// (redis.NewFailoverClient with its master name and Sentinel), closed by
// t.Cleanup. opts, if given, is the starting point; its MasterName and
// SentinelAddrs are set.
func (s *SentinelSet) FailoverClient(tb testing.TB, opts ...*redis.FailoverOptions) *redis.Client {
	tb.Helper()
	o := &redis.FailoverOptions{}
	if len(opts) > 0 && opts[0] != nil {
		c := *opts[0]
		o = &c
	}
	o.MasterName, o.SentinelAddrs = s.name, s.SentinelAddrs()
	c := redis.NewFailoverClient(o)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// WaitFailover waits until the Sentinel names a master other than old and
// that node answers ROLE as a master, and returns it with the time it was
// first seen so (polled every 5 ms). It fails the test after FailoverTimeout.
func (s *SentinelSet) WaitFailover(old *Srv) (*Srv, time.Time) {
	s.tb.Helper()
	deadline := time.Now().Add(FailoverTimeout)
	ctx := context.Background()
	for {
		addr, err := s.masterAddr(ctx)
		if err == nil && addr != old.Addr() {
			for _, n := range s.nodes {
				if n.Addr() == addr && isMaster(ctx, n) {
					return n, time.Now()
				}
			}
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("redistest: no failover from %s within %v (sentinel says %q, %v)", old.Addr(), FailoverTimeout, addr, err)
		}
		time.Sleep(5 * time.Millisecond) // polling interval; the deadline bounds the wait
	}
}

// isMaster reports whether n answers ROLE with "master".
func isMaster(ctx context.Context, n *Srv) bool {
	c := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	v, err := c.Do(ctx, "ROLE").Slice()
	return err == nil && len(v) > 0 && v[0] == "master"
}

// ClusterWithReplicas starts a Redis Cluster of three masters with one
// replica each (`redis-cli --cluster create ... --cluster-replicas 1
// --cluster-yes`), cluster-node-timeout ReplicaClusterNodeTimeout, and waits
// until every node reports cluster_state:ok and every replica's link is up,
// so that a failover can begin at once. It takes about four seconds. All six
// nodes are killed by t.Cleanup; when the test failed, the tail of each one's
// log is logged.
func ClusterWithReplicas(tb testing.TB) *ClusterSrv {
	tb.Helper()
	cli := requireBinary(tb, "redis-cli")
	bin := requireBinary(tb, "redis-server")
	c := &ClusterSrv{replicas: true}
	args := append([]string{"--cluster-replica-validity-factor", "0"}, replicationArgs...)
	for i := 0; i < 6; i++ {
		c.nodes = append(c.nodes, startClusterNode(tb, bin, ReplicaClusterNodeTimeout, args...))
	}
	tb.Cleanup(func() { logTailsIfFailed(tb, c.nodes...) })
	create := []string{"--cluster", "create"}
	create = append(create, c.Addrs()...)
	create = append(create, "--cluster-replicas", "1", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, create...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(create, " "), err, out)
	}
	if err := c.waitOK(); err != nil {
		tb.Fatalf("redistest: cluster %v: %v\n%s", c.Addrs(), err, out)
	}
	if err := c.waitReplicas(); err != nil {
		tb.Fatalf("redistest: cluster %v: %v\n%s", c.Addrs(), err, out)
	}
	return c
}

// waitReplicas waits until three nodes are replicas with their link up.
func (c *ClusterSrv) waitReplicas() error {
	deadline := time.Now().Add(StartTimeout)
	ctx := context.Background()
	for {
		up := 0
		for _, n := range c.nodes {
			cl := redis.NewClient(&redis.Options{Addr: n.Addr()})
			info, err := cl.Info(ctx, "replication").Result()
			_ = cl.Close()
			if err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up") {
				up++
			}
		}
		if up == 3 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of 3 replicas linked to their master within %v", up, StartTimeout)
		}
		time.Sleep(20 * time.Millisecond) // polling interval; the deadline bounds the wait
	}
}

// MasterOf returns the node that serves key's slot now, as CLUSTER SLOTS on
// a live node says.
func (c *ClusterSrv) MasterOf(tb testing.TB, key string) *Srv {
	tb.Helper()
	ctx := context.Background()
	for _, n := range c.nodes {
		cl := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
		slot, err := cl.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			_ = cl.Close()
			continue
		}
		addr, err := slotMaster(ctx, cl, int(slot))
		_ = cl.Close()
		if err != nil {
			continue
		}
		for _, m := range c.nodes {
			if m.Addr() == addr {
				return m
			}
		}
	}
	tb.Fatalf("redistest: no live node of %v names the master of %q", c.Addrs(), key)
	return nil
}

// slotMaster returns the master address of slot in cl's CLUSTER SHARDS.
func slotMaster(ctx context.Context, cl *redis.Client, slot int) (string, error) {
	shards, err := cl.ClusterShards(ctx).Result()
	if err != nil {
		return "", err
	}
	for _, sh := range shards {
		if !shardServes(sh, slot) {
			continue
		}
		for _, n := range sh.Nodes {
			if n.Role == "master" {
				return net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10)), nil
			}
		}
	}
	return "", fmt.Errorf("slot %d not served", slot)
}

// shardServes reports whether one of sh's slot ranges holds slot.
func shardServes(sh redis.ClusterShard, slot int) bool {
	for _, r := range sh.Slots {
		if int(r.Start) <= slot && slot <= int(r.End) {
			return true
		}
	}
	return false
}

// WaitPromoted waits until a node other than old claims key's slot as its
// own master (its own CLUSTER SLOTS names itself), and returns it with the
// time it was first seen so (polled every 5 ms): the moment the replica won
// its election. It fails the test after FailoverTimeout.
func (c *ClusterSrv) WaitPromoted(tb testing.TB, key string, old *Srv) (*Srv, time.Time) {
	tb.Helper()
	ctx := context.Background()
	var clients []*redis.Client
	var live []*Srv
	for _, n := range c.nodes {
		if n == old {
			continue
		}
		clients = append(clients, redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1}))
		live = append(live, n)
	}
	defer func() {
		for _, cl := range clients {
			_ = cl.Close()
		}
	}()
	slot, err := clients[0].ClusterKeySlot(ctx, key).Result()
	if err != nil {
		tb.Fatalf("redistest: CLUSTER KEYSLOT %q: %v", key, err)
	}
	deadline := time.Now().Add(FailoverTimeout)
	for {
		for i, cl := range clients {
			if addr, err := slotMaster(ctx, cl, int(slot)); err == nil && addr == live[i].Addr() {
				return live[i], time.Now()
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: no node took slot %d over from %s within %v", slot, old.Addr(), FailoverTimeout)
		}
		time.Sleep(5 * time.Millisecond) // polling interval; the deadline bounds the wait
	}
}

// logTailsIfFailed logs the last lines of each server's log when tb failed.
func logTailsIfFailed(tb testing.TB, srvs ...*Srv) {
	if !tb.Failed() {
		return
	}
	for _, s := range srvs {
		what := "redis-server"
		if s.conf != "" {
			what = "sentinel"
		}
		tb.Logf("redistest: %s %s log tail:\n%s", what, s.Addr(), logTail(s.logPath, 30))
	}
}
