package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// deadlineClient honours context deadlines, as the lifecycle's clients do.
func deadlineClient(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, DialerRetries: 1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestFrozenRedisHoldsCloseNoLongerThanTheWriteTimeout(t *testing.T) {
	s := redistest.Server(t)
	const writeTimeout = 300 * time.Millisecond
	r := registry.New(deadlineClient(t, s.Addr()), registry.WithWriteTimeout(writeTimeout))
	m, err := r.Member(entry("api", "i1", "init"))
	if err != nil {
		t.Fatal(err)
	}
	s.Freeze()
	m.Update(entry("api", "i1", "configuring"), transition("connecting", "configuring"))
	// The writer is now stuck on the frozen server, or about to be.
	eventually(t, 5*time.Second, nil, func() bool { return m.Stats().Failures > 0 }, "a failed write")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = m.Close(ctx)
	took := time.Since(start)
	t.Logf("Close with Redis frozen took %v (ctx 100ms, write timeout %v)", took, writeTimeout)
	if !errors.Is(err, registry.ErrUndelivered) {
		t.Errorf("Close = %v, want ErrUndelivered", err)
	}
	if limit := 100*time.Millisecond + writeTimeout + 500*time.Millisecond; took > limit {
		t.Fatalf("Close took %v with Redis frozen, want under %v", took, limit)
	}
}

func TestRegisterAsyncReturnsAtOnceAndTheWriterRegistersOnceRedisAnswers(t *testing.T) {
	s := redistest.Server(t)
	c := deadlineClient(t, s.Addr())
	r := registry.New(c, registry.WithWriteTimeout(200*time.Millisecond), registry.WithRetryBackoff(10*time.Millisecond, 100*time.Millisecond))
	m := newMember(t, r, entry("api", "i1", "registering"))
	s.Freeze()
	start := time.Now()
	m.RegisterAsync(entry("api", "i1", "registering"))
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Fatalf("RegisterAsync took %v with Redis frozen, want it not to wait", took)
	}
	s.Thaw()
	ctx := context.Background()
	eventually(t, 5*time.Second, nil, func() bool {
		e, err := r.Entry(ctx, "api", "i1")
		return err == nil && e.Status == "registering"
	}, "entry written by the writer after the thaw")
	if ok, err := c.SIsMember(ctx, registry.ServicesKey, "api").Result(); err != nil || !ok {
		t.Fatalf("service not in %s after an async registration: %v, %v", registry.ServicesKey, ok, err)
	}
}

func TestEntryErrorIsStoredOnlyWhenSet(t *testing.T) {
	mr := miniredis.RunT(t)
	r := registry.New(newClient(t, mr.Addr()))
	ctx := context.Background()
	failing := entry("api", "i1", "stopping_daemons")
	failing.Error = "phase starting: past its budget of 1s"
	if err := r.Register(ctx, failing); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(ctx, entry("api", "i2", "running")); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]any{"i1": failing.Error, "i2": nil} {
		raw, err := mr.Get(registry.EntryKey("api", id))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(raw), &m); err != nil {
			t.Fatal(err)
		}
		if m["error"] != want {
			t.Errorf("%s: error = %v, want %v in %s", id, m["error"], want, raw)
		}
	}
	if e, err := r.Entry(ctx, "api", "i1"); err != nil || e.Error != failing.Error {
		t.Fatalf("Entry = %+v, %v; want the error read back", e, err)
	}
}
