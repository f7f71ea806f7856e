//go:build unix

package dashboard

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/proctest"
)

// The child process of TestManyIdleConnectionsDoNotStarveAnAuthorisedRequest:
// this test binary, run again with childRedis set to the Redis address.
const (
	childRedis  = "DASHBOARD_TEST_CHILD_REDIS"
	childNofile = 64 // the child's descriptor limit (RLIMIT_NOFILE)
	childToken  = "child-token-0123456789"
)

func init() {
	if addr := os.Getenv(childRedis); addr != "" {
		os.Exit(runChild(addr))
	}
}

// childLimits are the child's timeouts; its connection cap is the
// default, from its descriptor limit.
var childLimits = Limits{ReadHeaderTimeout: time.Second, ReadTimeout: time.Second, IdleTimeout: time.Second}

// runChild serves a dashboard with a token under a limit of childNofile
// descriptors, prints its address, and serves until SIGTERM or SIGKILL.
func runChild(addr string) int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	lim.Cur = childNofile
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	s, err := New(Config{Redis: rdb, Token: childToken, Limits: childLimits,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("listening %s\n", ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = s.Run(ctx) }()
	err = s.Serve(ctx, ln)
	stop()
	wg.Wait()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// The review's 245 idle connections exhausted a 256-descriptor limit, and
// an authorised request timed out. A dashboard process limited to 64
// descriptors gets 64 connections that never finish a request (half
// keep-alive after one, half slow-body logins), then an authorised
// request: it is answered within a few of the timeouts (here 1s).
func TestManyIdleConnectionsDoNotStarveAnAuthorisedRequest(t *testing.T) {
	mr := miniredis.RunT(t)
	child := proctest.Start(t, proctest.Cmd{Bin: os.Args[0], Name: "dashboard child", Args: []string{"-test.run=^$"},
		Env: []string{childRedis + "=" + mr.Addr()}})
	addr := child.WaitForMatch(t, regexp.MustCompile(`listening (127\.0\.0\.1:\d+)`))[1]

	for i := range childNofile {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		if i%2 == 0 {
			fmt.Fprintf(c, "GET /login HTTP/1.1\r\nHost: %s\r\n\r\n", addr) // and never read, nor another request
		} else {
			fmt.Fprintf(c, "POST /login HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntoken=", addr)
		}
	}

	// Within a few timeouts: each round of connections that the cap lets
	// in holds its slots one timeout.
	bound := 4*childLimits.IdleTimeout + 2*slack
	client := &http.Client{Timeout: bound}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/api/fleet", nil)
	req.Header.Set("Authorization", "Bearer "+childToken)
	start := time.Now()
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("the authorised request, after %d idle and slow connections: %v (after %v)", childNofile, err, time.Since(start).Round(time.Millisecond))
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("the authorised request: %d, want 200", res.StatusCode)
	}
	t.Logf("the authorised request was answered %v after %d idle and slow connections, with a limit of %d descriptors",
		time.Since(start).Round(time.Millisecond), childNofile, childNofile)
}
