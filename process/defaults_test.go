package process

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/registry"
	"github.com/stargazer/lifecycle/service"
)

// runUntilRunning runs svc under Config.Run with env and opts until its boot
// completed, stops it, and returns the exit code and the log.
func runUntilRunning(t *testing.T, env map[string]string, opts ...service.Option) (int, string) {
	t.Helper()
	logs := newLockedWriter()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	codeCh := make(chan int, 1)
	go func() { codeCh <- Config{Getenv: envOf(env), Stderr: logs}.Run(ctx, newTestService(), opts...) }()
	poll(t, func() bool { return strings.Contains(logs.String(), "boot completed") || len(codeCh) > 0 }, "boot completed")
	cancel()
	select {
	case code := <-codeCh:
		return code, logs.String()
	case <-time.After(10 * time.Second):
		t.Fatalf("Run did not return after its context ended\n%s", logs.String())
		return 0, ""
	}
}

// Without REDIS_URL, Main runs without Redis (no registry entry, no control
// ops: SG_REDIS_REQUIRED, true by default, is about a Redis that is set),
// and says so at warn, and, without SG_SERVICE_NAME, that it runs as demo.
// SG_REDIS_REQUIRED=false says no Redis is meant: one line at info. Set to
// true, there is nothing to require: exit 2, naming it and REDIS_URL.
func TestMainWithoutRedisURLWarnsThatItRunsWithoutRedisAndRefusesToRequireIt(t *testing.T) {
	code, out := runUntilRunning(t, localEnv(nil))
	if code != ExitOK {
		t.Fatalf("exit code %d, want 0\n%s", code, out)
	}
	for _, want := range []string{
		`level=WARN msg="running without Redis: REDIS_URL is unset, so there is no registry entry, no heartbeat and no control ops`,
		`level=WARN msg="no service name set (SG_SERVICE_NAME or WithServiceName): running as the default, \"demo\", in the registry, the logs and the traces"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %s\n%s", want, out)
		}
	}

	code, out = runUntilRunning(t, localEnv(map[string]string{"SG_REDIS_REQUIRED": "false", "SG_SERVICE_NAME": "orders"}))
	if code != ExitOK || strings.Contains(out, "level=WARN") || !strings.Contains(out, `level=INFO msg="running without Redis (REDIS_URL unset, Redis not required)`) {
		t.Errorf("SG_REDIS_REQUIRED=false: exit %d, want 0 with one info line on running without Redis and no warning\n%s", code, out)
	}

	// Bounded: were it not refused, the instance would boot and run.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	logs := newLockedWriter()
	code = Config{Getenv: envOf(localEnv(map[string]string{"SG_REDIS_REQUIRED": "true"})), Stderr: logs}.Run(ctx, newTestService())
	if out := logs.String(); code != ExitConfig || !strings.Contains(out, `SG_REDIS_REQUIRED=\"true\": REDIS_URL is unset`) {
		t.Errorf("SG_REDIS_REQUIRED=true without REDIS_URL: exit %d, want 2 naming SG_REDIS_REQUIRED and REDIS_URL\n%s", code, out)
	}
}

// REDIS_URL beside WithRedis: the environment wins, as every variable does
// over its option under Main, and the boot says so at warn, naming both. The
// entry is in REDIS_URL's Redis, not in the one WithRedis's client reaches.
func TestRedisURLBesideWithRedisWarnsThatREDIS_URLWins(t *testing.T) {
	fromURL, fromOption := miniredis.RunT(t), miniredis.RunT(t)
	client := redis.NewClient(&redis.Options{Addr: fromOption.Addr()})
	t.Cleanup(func() { client.Close() })
	code, out := runUntilRunning(t, localEnv(map[string]string{"REDIS_URL": "redis://" + fromURL.Addr() + "/0", "SG_SERVICE_NAME": "orders"}),
		service.WithRedis(client))
	if code != ExitOK {
		t.Fatalf("exit code %d\n%s", code, out)
	}
	want := `level=WARN msg="REDIS_URL wins over the Redis client given with WithRedis: the lifecycle (registry, control ops, health) uses REDIS_URL's; unset REDIS_URL to use yours"`
	if !strings.Contains(out, want) || !strings.Contains(out, "redis="+fromURL.Addr()) || !strings.Contains(out, "with_redis="+fromOption.Addr()) {
		t.Errorf("the log lacks %s naming redis=%s and with_redis=%s\n%s", want, fromURL.Addr(), fromOption.Addr(), out)
	}
	if !fromURL.Exists(registry.EventsKey) {
		t.Errorf("REDIS_URL's Redis holds %v: no sg:events, the instance did not use it", fromURL.Keys())
	}
	if n := fromOption.TotalConnectionCount(); n != 0 {
		t.Errorf("%d connections reached WithRedis's Redis", n)
	}
}
