package main

import (
	"context"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
	"github.com/stargazer/lifecycle/service"
)

// The README's "Testing your service": the worker in the test's process,
// on an in-process Redis (miniredis) and on a real redis-server.

func TestTheWorkerRegistersRunsAndLeavesTheRegistryOnMiniredis(t *testing.T) {
	mr := miniredis.RunT(t) // an in-process Redis, closed when the test ends
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	runWorkerOnce(t, rdb)
}

func TestTheWorkerRegistersRunsAndLeavesTheRegistryOnARealRedis(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: redisServer(t)})
	defer rdb.Close()
	runWorkerOnce(t, rdb)
}

// runWorkerOnce boots the worker as an Instance on rdb, sees it registered
// running, stops it, and sees its entry gone.
func runWorkerOnce(t *testing.T, rdb redis.UniversalClient) {
	in, err := service.New(&worker{},
		service.WithServiceName("worker"),
		service.WithRedis(rdb),
		service.WithHealthAddr("127.0.0.1:0"), // a free port: tests run side by side
		service.WithBootJitter(0),             // no random delay before the ping
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	ran := make(chan error, 1)
	go func() { ran <- in.Run(ctx) }() // boots, runs, shuts down when ctx ends

	reg := registry.New(rdb)
	eventually(t, func() bool {
		entries, err := reg.Instances(ctx, "worker")
		return err == nil && len(entries) == 1 && entries[0].Status == string(phases.Running)
	})
	stop()
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if entries, err := reg.Instances(t.Context(), "worker"); err != nil || len(entries) != 0 {
		t.Fatalf("after the stop: %d entries (%v), want none", len(entries), err)
	}
}

// eventually polls cond until it holds, failing the test after 10s.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// redisServer starts a redis-server of the test's own on a free loopback
// port, stopped when the test ends, and returns its address; without
// redis-server in PATH the test is skipped.
func redisServer(t *testing.T) string {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a free port, given back for redis-server
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	eventually(t, func() bool { return rdb.Ping(t.Context()).Err() == nil })
	return addr
}
