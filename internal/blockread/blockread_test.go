package blockread_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/internal/blockread"
	"github.com/stargazer/lifecycle/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The reason the package exists: closing the copy ends a read blocked on a
// real redis-server at once, although its context has no end.
func TestClosingTheCopyEndsABlockedRead(t *testing.T) {
	srv := redistest.Server(t)
	rdb := srv.Client(t)
	reader, own := blockread.NewClient(rdb, blockread.NoRetry, blockread.Limits{})
	if !own {
		t.Fatal("a *redis.Client was not copied")
	}
	errc := make(chan error, 1)
	go func() {
		_, err := reader.XRead(context.Background(), &redis.XReadArgs{Streams: []string{"s", "$"}, Block: time.Hour}).Result()
		errc <- err
	}()
	// Wait until the read is blocked on the server.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := rdb.Do(context.Background(), "INFO", "clients").Text()
		if err == nil && strings.Contains(n, "blocked_clients:1\r\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the read never blocked")
		}
		time.Sleep(5 * time.Millisecond) // polling, bounded by the deadline
	}
	start := time.Now()
	if err := reader.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil || errors.Is(err, redis.Nil) {
			t.Fatalf("the blocked read returned %v, want a closed-connection error", err)
		}
		t.Logf("blocked read ended %v after Close: %v", time.Since(start), err)
	case <-time.After(5 * time.Second):
		t.Fatal("closing the copy did not end the blocked read")
	}
	// The original is untouched.
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("the original client: %v", err)
	}
}

func TestAClientItCannotCopyIsShared(t *testing.T) {
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	defer ring.Close()
	reader, own := blockread.NewClient(ring, blockread.Retry, blockread.Limits{})
	if own || reader != redis.UniversalClient(ring) {
		t.Fatalf("a ring was copied (own %v): the caller would close a client it does not own", own)
	}
}
