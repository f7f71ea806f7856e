package controlops

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
)

func TestFrozenRedisHoldsStopNoLongerThanTheCallTimeout(t *testing.T) {
	srv := redistest.Server(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, DialerRetries: 1})
	t.Cleanup(func() { _ = rdb.Close() })
	target := newTarget("svc", "i-1")
	// The op's handler freezes Redis: its result is then written to a Redis
	// that answers nothing, as when Redis stalls in the middle of an op.
	handling, sent := make(chan struct{}), make(chan struct{})
	target.onDo = func(string) {
		<-sent // the XADD's reply is read: freezing cannot cut it
		srv.Freeze()
		close(handling)
	}
	const callTimeout = 300 * time.Millisecond
	d, err := New(rdb, target, WithLogger(quiet), WithBackoff(10*time.Millisecond, 100*time.Millisecond),
		WithCallTimeout(callTimeout), WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	xadd(t, rdb, "svc", newOp("echo", "*", "nonce-frozen1", time.Now()).Values())
	close(sent)
	select {
	case <-handling:
	case <-time.After(10 * time.Second):
		t.Fatal("the op was never handled")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	err = d.Stop(ctx)
	took := time.Since(start)
	t.Logf("Stop with Redis frozen mid-op took %v (call timeout %v)", took, callTimeout)
	if err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if limit := callTimeout + 500*time.Millisecond; took > limit {
		t.Fatalf("Stop took %v with Redis frozen, want under %v", took, limit)
	}
}
