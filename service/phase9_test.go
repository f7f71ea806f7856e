package service

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/stargazer/lifecycle/phases"
)

// A second instance on one host, its health port taken: the boot fails in
// init, before anything touches Redis, with a *ConfigError naming
// WithHealthAddr and the address (process.Main exits 2 on it).
func TestATakenHealthPortFailsTheBootInInitAsAConfigErrorTouchingNoRedis(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()

	f := newFixture(t)
	svc := newTestService()
	in, err := New(svc, f.options(WithHealthAddr(addr))...)
	if err != nil {
		t.Fatal(err)
	}
	err = wait(t, startRun(t, in))
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Name != "WithHealthAddr" || ce.Value != addr || !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "phase init") {
		t.Fatalf("Run = %v, want a ConfigError naming WithHealthAddr and %s, address in use, in phase init", err, addr)
	}
	if in.State() != phases.Failed || svc.called("Configure") || svc.onStop.Load() != 0 {
		t.Errorf("state %q, calls %v, OnStop %d: want failed, nothing of the service's", in.State(), svc.calls, svc.onStop.Load())
	}
	if n := f.mr.TotalConnectionCount(); n != 0 {
		t.Errorf("%d connections reached Redis", n)
	}
}

// A port taken after init (here by a configuring hook) fails phase 9 the
// same way: a *ConfigError naming the option and the address; the shutdown
// steps undo what the boot started (OnStop runs).
func TestAHealthPortTakenAfterInitFailsPhase9AsAConfigError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // free at init; taken again in configuring

	var mu sync.Mutex
	var taken net.Listener
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		if taken != nil {
			taken.Close()
		}
	}()
	take := WithHook(phases.Configuring, func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		var lerr error
		taken, lerr = net.Listen("tcp", addr)
		return lerr
	})
	f := newFixture(t)
	svc := newTestService()
	in, err := New(svc, f.options(WithHealthAddr(addr), take)...)
	if err != nil {
		t.Fatal(err)
	}
	err = wait(t, startRun(t, in))
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Name != "WithHealthAddr" || !strings.Contains(err.Error(), addr) || !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "phase serving_health") {
		t.Fatalf("Run = %v, want a ConfigError naming WithHealthAddr and %s, address in use, in phase serving_health", err, addr)
	}
	if in.State() != phases.Failed || svc.onStop.Load() != 1 {
		t.Fatalf("state %q, OnStop %d; want failed, 1", in.State(), svc.onStop.Load())
	}
}

func TestInvalidHealthAddressIsAConfigurationError(t *testing.T) {
	_, err := New(newTestService(), WithHealthAddr("127.0.0.1:70000"))
	if err == nil || !strings.Contains(err.Error(), "70000") {
		t.Fatalf("New = %v, want an error naming the port", err)
	}
}
