package controlops

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/phases"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testKey = []byte("0123456789abcdef0123456789abcdef")

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fakeTarget records the ops it runs. Its restart moves it out of running.
// What its states mean it reads from the lifecycle table, as the lifecycle
// does.
type fakeTarget struct {
	svc, inst string

	mu       sync.Mutex
	state    string
	stopping bool // a stop was asked for: no restart may begin
	strict   bool // ops are refused outside running, as the lifecycle does
	calls    []string
	fail     map[string]error
	onDo     func(op string)
}

func (f *fakeTarget) setState(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = s
}

func newTarget(svc, inst string) *fakeTarget {
	return &fakeTarget{svc: svc, inst: inst, state: string(phases.Running), fail: map[string]error{}}
}

func (f *fakeTarget) Service() string  { return f.svc }
func (f *fakeTarget) Instance() string { return f.inst }
func (f *fakeTarget) State() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

func (f *fakeTarget) Restartable() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := phases.Lifecycle().Role(phases.State(f.state))
	return (r == phases.RoleServing || r == phases.RoleDraining) && !f.stopping
}

func (f *fakeTarget) Do(ctx context.Context, op string, args json.RawMessage) error {
	f.mu.Lock()
	if f.strict && f.state != string(phases.Running) {
		defer f.mu.Unlock()
		return fmt.Errorf("%w: %q in state %q", ErrInvalidState, op, f.state)
	}
	f.calls = append(f.calls, op)
	err, hook := f.fail[op], f.onDo
	if err == nil && op == OpRestart {
		f.state = "stopping_daemons"
	}
	f.mu.Unlock()
	if hook != nil {
		hook(op)
	}
	if err == nil && op != OpRestart && op != OpPull && op != "echo" {
		return fmt.Errorf("%w: %q", ErrUnknownOp, op)
	}
	return err
}

func (f *fakeTarget) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// withRand sets the source of the backoff's jitter, as retry.WithRand.
func withRand(f func() float64) Option {
	return optionFunc(func(c *config) { c.rand = f })
}

// logBuffer is a log destination that tests read while a daemon writes.
type logBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// startDaemon starts a daemon for target, stopped by t.Cleanup.
func startDaemon(t testing.TB, rdb redis.UniversalClient, target Target, opts ...Option) *Daemon {
	t.Helper()
	opts = append([]Option{WithLogger(quiet), WithBackoff(10*time.Millisecond, 100*time.Millisecond)}, opts...)
	d, err := New(rdb, target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop(context.Background()) })
	return d
}

// results reads every result of service so far.
func results(t testing.TB, rdb redis.UniversalClient, service string) []Result {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), ResultsKey(service), "-", "+").Result()
	if err != nil {
		t.Fatalf("XRANGE results: %v", err)
	}
	out := make([]Result, len(msgs))
	for i, m := range msgs {
		out[i] = parseResult(m)
	}
	return out
}

// waitResults polls until service has n results, or fails after 10s.
func waitResults(t testing.TB, rdb redis.UniversalClient, service string, n int) []Result {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rs := results(t, rdb, service)
		if len(rs) >= n {
			return rs
		}
		if time.Now().After(deadline) {
			t.Fatalf("want %d results, have %d: %+v", n, len(rs), rs)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// xadd writes raw values to service's op stream.
func xadd(t testing.TB, rdb redis.UniversalClient, service string, values map[string]any) string {
	t.Helper()
	id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: StreamKey(service), Values: values}).Result()
	if err != nil {
		t.Fatalf("XADD: %v", err)
	}
	return id
}

// newOp returns a fresh unsigned op issued now.
func newOp(name, target, nonce string, now time.Time) Op {
	return Op{ID: "op-" + nonce, Name: name, Target: target, IssuedAt: now.Truncate(time.Millisecond),
		TTL: 30 * time.Second, Nonce: nonce}
}
