package process

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// localEnv is an environment with the health server on a free loopback
// port, no jitter, and extra over it.
func localEnv(extra map[string]string) map[string]string {
	env := map[string]string{"SG_BOOT_JITTER": "0", "SG_HEALTH_PORT": "0", "SG_HEALTH_HOST": "127.0.0.1"}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// A second instance on one host with the first one's SG_HEALTH_PORT exits
// 2, naming SG_HEALTH_PORT and the port, before it touched Redis: a port
// another process holds is a configuration error (restarting does not free
// it). The first instance goes on.
func TestASecondInstanceOnTheSameHealthPortExitsTwoNamingSG_HEALTH_PORT(t *testing.T) {
	mr := miniredis.RunT(t)
	first := newLockedWriter()
	ctx, cancel := context.WithCancel(context.Background())
	firstCode := make(chan int, 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	env := localEnv(map[string]string{"REDIS_URL": "redis://" + mr.Addr() + "/0", "SG_SERVICE_NAME": "orders", "SG_HEALTH_PORT": port})
	go func() { firstCode <- Config{Getenv: envOf(env), Stderr: first}.Run(ctx, newTestService()) }()
	defer func() {
		cancel()
		if code := <-firstCode; code != ExitOK {
			t.Errorf("the first instance exited %d\n%s", code, first.String())
		}
	}()
	poll(t, func() bool { return strings.Contains(first.String(), "boot completed") }, "the first instance running")

	other := miniredis.RunT(t) // the second instance's Redis: it must see nothing
	env2 := localEnv(map[string]string{"REDIS_URL": "redis://" + other.Addr() + "/0", "SG_SERVICE_NAME": "orders", "SG_HEALTH_PORT": port})
	second := newLockedWriter()
	start := time.Now()
	code := Config{Getenv: envOf(env2), Stderr: second}.Run(context.Background(), newTestService())
	t.Logf("the second instance exited %d %v after Run began", code, time.Since(start))
	out := second.String()
	if code != ExitConfig || !strings.Contains(out, `SG_HEALTH_PORT=\"`+port+`\"`) || !strings.Contains(out, "127.0.0.1:"+port) ||
		!strings.Contains(out, "address already in use") || !strings.Contains(out, "set SG_HEALTH_PORT to a free port") {
		t.Fatalf("the second instance: exit %d, want 2 naming SG_HEALTH_PORT, the address and the clash\n%s", code, out)
	}
	if n := other.TotalConnectionCount(); n != 0 {
		t.Errorf("%d connections reached the second instance's Redis", n)
	}
	if strings.Contains(first.String(), "instance failed") {
		t.Errorf("the first instance failed\n%s", first.String())
	}
}

func newLockedWriter() *lockedWriter { return &lockedWriter{b: &bytes.Buffer{}} }
