package service

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/stargazer/lifecycle/phases"
)

// bootLog boots an instance of a testService with opts and a logger of its
// own, stops it, and returns its log.
func bootLog(t *testing.T, opts ...Option) string {
	t.Helper()
	var logs bytes.Buffer
	w := syncWriter(&logs)
	in, err := New(newTestService(), append([]Option{WithBootJitter(0), WithHealthAddr("127.0.0.1:0"), WithInstanceID("i-1"),
		WithLogger(slog.New(slog.NewTextHandler(w, nil)))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, in)
	waitState(t, in, phases.Running)
	in.RequestStop()
	if err := wait(t, done); err != nil {
		t.Fatalf("Run = %v", err)
	}
	return w.(*lockedWriter).String()
}

// Without WithServiceName an instance runs, and registers, as "demo": the
// boot says so at warn, in init. With a name it says nothing of it.
func TestNoServiceNameWarnsThatTheInstanceRunsAsDemo(t *testing.T) {
	const want = `level=WARN msg="no service name set (WithServiceName): running as the default, \"demo\", in the registry, the logs and the traces" service=demo`
	if out := bootLog(t); !strings.Contains(out, want) {
		t.Errorf("no warning %s in the log:\n%s", want, out)
	}
	if out := bootLog(t, WithServiceName("orders")); strings.Contains(out, "no service name set") {
		t.Errorf("a warning with a name set:\n%s", out)
	}
}

// A library user without WithRedis runs without Redis (tests do): no warning,
// unless Redis was required in so many words, which New refuses, naming the
// option. Under process.Main the environment decides (process tests).
func TestWithoutRedisTheLibraryIsQuietUnlessRedisIsRequiredExplicitly(t *testing.T) {
	if out := bootLog(t, WithServiceName("orders")); strings.Contains(out, "level=WARN") {
		t.Errorf("a warning without Redis, outside Main:\n%s", out)
	}
	_, err := New(newTestService(), WithServiceName("orders"), WithRedisRequired(true))
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Name != "WithRedisRequired" || !strings.Contains(err.Error(), "no Redis client") {
		t.Fatalf("New with WithRedisRequired(true) and no Redis = %v, want a ConfigError naming WithRedisRequired", err)
	}
	if _, err := New(newTestService(), WithServiceName("orders"), WithRedisRequired(false), WithoutHealthServer()); err != nil {
		t.Fatalf("New with WithRedisRequired(false) and no Redis = %v", err)
	}
}
