package redistest_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestServerAnswersOnLoopbackWithPersistenceOff(t *testing.T) {
	s := redistest.Server(t)
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING %s: %v", s.Addr(), err)
	}
	cfg, err := c.ConfigGet(ctx, "*").Result()
	if err != nil {
		t.Fatalf("CONFIG GET: %v", err)
	}
	for k, want := range map[string]string{"bind": "127.0.0.1", "save": "", "appendonly": "no"} {
		if got := cfg[k]; got != want {
			t.Errorf("config %s = %q, want %q", k, got, want)
		}
	}
}

func TestServerPassesExtraArgs(t *testing.T) {
	s := redistest.Server(t, "--maxmemory", "3mb", "--maxmemory-policy", "allkeys-random")
	cfg, err := s.Client(t).ConfigGet(context.Background(), "maxmemory-policy").Result()
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg["maxmemory-policy"]; got != "allkeys-random" {
		t.Fatalf("maxmemory-policy = %q, want allkeys-random", got)
	}
}

func TestKillMakesServerUnreachableAndRestartBringsItBackEmptyOnSamePort(t *testing.T) {
	s := redistest.Server(t)
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr()
	s.Kill()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatalf("PING after Kill succeeded")
	}
	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, s.Addr())
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}
	if n, err := c.Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("EXISTS k after Restart = %d, %v; want 0 (no persistence)", n, err)
	}
	if _, err := os.Stat(s.Dir() + "/dump.rdb"); err == nil {
		t.Errorf("dump.rdb written despite --save \"\"")
	}
}

func TestClusterSplitsSlotsOverThreeMasters(t *testing.T) {
	cl := redistest.Cluster(t)
	c := cl.Client(t)
	ctx := context.Background()
	shards, err := c.ClusterShards(ctx).Result()
	if err != nil {
		t.Fatalf("CLUSTER SHARDS: %v", err)
	}
	masters := map[string]bool{}
	covered := 0
	for _, sh := range shards {
		for _, r := range sh.Slots {
			covered += int(r.End-r.Start) + 1
		}
		for _, n := range sh.Nodes {
			if n.Role == "master" {
				masters[n.ID] = true
			}
		}
	}
	if covered != 16384 || len(masters) != 3 {
		t.Fatalf("slots covered %d by %d masters, want 16384 by 3", covered, len(masters))
	}
	// Keys in different slots land on different nodes and still work.
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		if err := c.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
	}
}

func TestFreezeAnswersNothingUntilThawThenAnswersWhatWasSent(t *testing.T) {
	s := redistest.Server(t)
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	s.Freeze()
	if !s.Frozen() {
		t.Fatal("Frozen() = false after Freeze")
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err := c.Ping(short).Err()
	cancel()
	var ne net.Error
	if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("PING to a frozen server = %v, want a timeout", err)
	}
	// A command sent while frozen (the kernel buffers it) is answered after
	// the thaw.
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		t.Fatalf("dialing a frozen server: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("SET k v\r\n")); err != nil {
		t.Fatal(err)
	}
	s.Thaw()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || line != "+OK\r\n" {
		t.Fatalf("SET sent while frozen answered %q, %v after the thaw", line, err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET k = %q, %v", got, err)
	}
}

func TestFrozenServerIsThawedAndKilledByCleanup(t *testing.T) {
	var s *redistest.Srv
	t.Run("fails midway while frozen", func(t *testing.T) {
		s = redistest.Server(t)
		s.Freeze()
		// The subtest ends here with the server frozen: its cleanups must thaw
		// and kill it.
	})
	if s.Frozen() {
		t.Fatal("server still frozen after its test's cleanups")
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialerRetries: 1})
	defer c.Close()
	if err := c.Ping(context.Background()).Err(); err == nil {
		t.Fatal("server still answers after its test's cleanups")
	}
}

func TestSentinelPromotesTheReplicaWhenTheMasterIsKilled(t *testing.T) {
	set := redistest.Sentinel(t)
	c := set.FailoverClient(t, &redis.FailoverOptions{DialerRetries: 1})
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET through the sentinel: %v", err)
	}
	old := set.Master()
	if old != set.Nodes()[0] {
		t.Fatalf("master %s, want the first node %s", old.Addr(), set.Nodes()[0].Addr())
	}
	// The write must have reached the replica before the kill to survive it.
	if err := c.Do(ctx, "WAIT", 1, 5000).Err(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	old.Kill()
	promoted, at := set.WaitFailover(old)
	t.Logf("kill -9 of master %s: sentinel promoted %s after %v", old.Addr(), promoted.Addr(), at.Sub(killed).Round(time.Millisecond))
	if promoted != set.Nodes()[1] {
		t.Fatalf("promoted %s, want the replica %s", promoted.Addr(), set.Nodes()[1].Addr())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := c.Get(ctx, "k").Result()
		if err == nil && v == "v" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET k through the sentinel after the failover = %q, %v", v, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

func TestClusterWithReplicasPromotesTheReplicaOfAKilledMaster(t *testing.T) {
	cl := redistest.ClusterWithReplicas(t)
	if n := len(cl.Nodes()); n != 6 {
		t.Fatalf("%d nodes, want 6", n)
	}
	c := cl.Client(t)
	ctx := context.Background()
	const key = "{svc}:k"
	if err := c.Set(ctx, key, "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	old := cl.MasterOf(t, key)
	if err := old.Client(t).Do(ctx, "WAIT", 1, 5000).Err(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	old.Kill()
	promoted, at := cl.WaitPromoted(t, key, old)
	t.Logf("kill -9 of master %s: replica %s took the slot after %v", old.Addr(), promoted.Addr(), at.Sub(killed).Round(time.Millisecond))
	if promoted == old {
		t.Fatal("the killed master still serves the slot")
	}
	fresh := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{promoted.Addr()}})
	defer fresh.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := fresh.Get(ctx, key).Result()
		if err == nil && v == "v" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s after the failover = %q, %v", key, v, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

func TestReadStatsCountsCommandsAndCPUSinceAnEarlierRead(t *testing.T) {
	s := redistest.Server(t)
	c := s.Client(t)
	ctx := context.Background()
	before, err := redistest.ReadStats(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	c.Set(ctx, "k", "v", 0)
	c.Eval(ctx, "return redis.call('GET', KEYS[1])", []string{"k"})
	after, err := redistest.ReadStats(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	d := after.Since(before)
	if d.Commands["set"] != 1 || d.Commands["eval"] != 1 || d.Commands["get"] != 1 || d.Calls() != 3 {
		t.Fatalf("calls since = %v, want set=1 eval=1 get=1 (a script's commands count)", d)
	}
	if d.CPU < 0 || after.UsedMemory <= 0 || d.NetInput <= 0 || after.Clients < 1 || !after.Time.After(before.Time) {
		t.Fatalf("stats since = %+v", d)
	}
}

func TestTLSServerAnswersAClientWithACertificateAndRefusesOneWithout(t *testing.T) {
	s := redistest.TLSServer(t)
	ctx := context.Background()
	if !strings.HasPrefix(s.URL(), "rediss://127.0.0.1:") {
		t.Errorf("URL %s, want rediss://127.0.0.1:port", s.URL())
	}
	if err := s.Client(t).Ping(ctx).Err(); err != nil {
		t.Fatalf("PING %s with the client certificate: %v", s.Addr(), err)
	}
	// Plain TCP: nothing listens on a port that speaks Redis in clear.
	plain := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer plain.Close()
	if err := plain.Ping(ctx).Err(); err == nil {
		t.Error("PING in clear answered")
	}
	cfg := s.TLS().ClientConfig(t)
	cfg.Certificates = nil
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), TLSConfig: cfg, MaxRetries: -1})
	defer c.Close()
	if err := c.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("PING without a client certificate: %v, want the server's certificate_required alert", err)
	}
}

// A CA file set at run time (CONFIG SET tls-ca-cert-file) verifies the
// next connections: the rotation tests make the server trust another CA so.
func TestTLSServerTakesANewClientCAAtRunTime(t *testing.T) {
	s := redistest.TLSServer(t)
	ctx := context.Background()
	admin := s.Client(t)
	ca2 := redistest.NewCA(t, "second CA")
	if err := admin.ConfigSet(ctx, "tls-ca-cert-file", ca2.File()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Ping(ctx).Err(); err != nil {
		t.Fatalf("the admin connection, open before: %v", err)
	}
	old := redis.NewClient(&redis.Options{Addr: s.Addr(), TLSConfig: s.TLS().ClientConfig(t), MaxRetries: -1})
	defer old.Close()
	if err := old.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Fatalf("a new connection with the first CA's certificate: %v, want unknown certificate authority", err)
	}
	cfg := s.TLS().ClientConfig(t)
	cfg.Certificates = []tls.Certificate{ca2.Client(t, "second").TLSCertificate(t)}
	next := redis.NewClient(&redis.Options{Addr: s.Addr(), TLSConfig: cfg, MaxRetries: -1})
	defer next.Close()
	if err := next.Ping(ctx).Err(); err != nil {
		t.Fatalf("a new connection with the second CA's certificate: %v", err)
	}
}

func TestRefusedAddrRefusesAndSilentCountsWithoutAnswering(t *testing.T) {
	if c, err := net.DialTimeout("tcp", redistest.RefusedAddr(t), time.Second); err == nil {
		c.Close()
		t.Fatal("RefusedAddr accepted a connection")
	}
	s := redistest.Silent(t)
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The kernel completes the dial before Silent's Accept returns: wait
	// for the count, then see that nothing was said.
	for deadline := time.Now().Add(10 * time.Second); s.Accepted() != 1; {
		if time.Now().After(deadline) {
			t.Fatalf("Accepted() = %d, want 1", s.Accepted())
		}
		time.Sleep(time.Millisecond) // polling, bounded by the deadline
	}
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Silent answered: %d bytes, %v", n, err)
	}
}
