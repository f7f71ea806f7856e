package registry_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
)

// backend is a Redis the same suite runs against.
type backend struct {
	name    string
	client  func(t *testing.T) redis.UniversalClient
	cluster bool
}

var backends = []backend{
	{name: "miniredis", client: func(t *testing.T) redis.UniversalClient {
		mr := miniredis.RunT(t)
		return newClient(t, mr.Addr())
	}},
	{name: "standalone", client: func(t *testing.T) redis.UniversalClient {
		return redistest.Server(t).Client(t)
	}},
	{name: "cluster", cluster: true, client: func(t *testing.T) redis.UniversalClient {
		return redistest.Cluster(t).Client(t)
	}},
}

func newClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// eventually polls cond every few milliseconds until it holds or timeout
// passes; step, if not nil, runs before each poll (e.g. to advance a fake
// clock). The sleep is the polling interval, bounded by the deadline.
func eventually(t *testing.T, timeout time.Duration, step func(), cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if step != nil {
			step()
		}
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recorder is a go-redis hook that records command names, can fail on
// forbidden commands, and can hold pipelines that contain a given command and
// key until released ("script" holds EVAL and EVALSHA by the script's first
// key: with an entry key it holds the entry writes).
type recorder struct {
	mu        sync.Mutex
	names     []string
	forbidden map[string]bool

	holdCmd, holdKey string
	held             chan struct{} // receives once per held pipeline
	release          chan struct{} // closed by open to let held pipelines through
	releaseOnce      sync.Once
}

// open stops holding pipelines and lets held ones through. Tests also
// register it with t.Cleanup after creating their Member, so that a failing
// test does not leave the writer held and Close waiting for ever.
func (r *recorder) open() {
	r.mu.Lock()
	r.holdCmd = ""
	r.mu.Unlock()
	r.releaseOnce.Do(func() { close(r.release) })
}

func (r *recorder) record(cmds ...redis.Cmder) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cmds {
		name := strings.ToLower(c.Name())
		r.names = append(r.names, name)
		if r.forbidden[name] {
			return &forbiddenErr{name}
		}
	}
	return nil
}

type forbiddenErr struct{ name string }

func (e *forbiddenErr) Error() string { return "test forbids " + e.name }

func (r *recorder) commands() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.names...)
}

func (r *recorder) shouldHold(cmds []redis.Cmder) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.holdCmd == "" {
		return false
	}
	for _, c := range cmds {
		args, key, name := c.Args(), 1, strings.ToLower(c.Name())
		if name == "eval" || name == "evalsha" {
			key = 3 // EVAL script numkeys key..., EVALSHA sha1 numkeys key...
			if r.holdCmd == "script" {
				name = "script"
			}
		}
		if name == r.holdCmd && len(args) > key && args[key] == r.holdKey {
			return true
		}
	}
	return false
}

func (r *recorder) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (r *recorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if err := r.record(cmd); err != nil {
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func (r *recorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if err := r.record(cmds...); err != nil {
			return err
		}
		if r.shouldHold(cmds) {
			r.held <- struct{}{}
			<-r.release
		}
		return next(ctx, cmds)
	}
}
