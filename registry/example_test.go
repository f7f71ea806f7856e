package registry_test

import (
	"context"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/registry"
)

func ExampleEntryKey() {
	fmt.Println(registry.EntryKey("checkout", "a1b2"))
	fmt.Println(registry.IndexKey("checkout"))
	fmt.Println(registry.ServicesKey, registry.EventsKey)
	// Output:
	// sg:registry:service:{checkout}:a1b2
	// sg:registry:index:{checkout}
	// sg:registry:services sg:events
}

// An instance reports its transitions through a Member; an operator lists
// the fleet with Services and Instances.
func ExampleRegistry_Member() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer c.Close()
	ctx := context.Background()

	r := registry.New(c)
	e := registry.Entry{Service: "checkout", Instance: "a1b2", Status: "init", Phase: "1"}
	m, err := r.Member(e)
	if err != nil {
		panic(err)
	}
	// Each transition: never blocks, never fails.
	e.Status, e.Phase = "configuring", "3"
	m.Update(e, &registry.Event{Event: "ping_ok", From: "connecting", To: "configuring", Phase: "3"})
	// Phase 8: synchronous, and the service joins the services set.
	e.Status, e.Phase, e.HealthAddr = "registering", "8", "127.0.0.1:9090"
	if err := m.Register(ctx, e); err != nil {
		panic(err)
	}
	m.StartHeartbeat()

	svcs, _ := r.Services(ctx)
	insts, _ := r.Instances(ctx, "checkout")
	fmt.Println(svcs, insts[0].Instance, insts[0].Status)

	// Shutdown: S1 stops the heartbeat, S3 deregisters, then Close flushes.
	m.StopHeartbeat()
	_ = m.Deregister(ctx)
	_ = m.Close(ctx)
	evs, _, _ := r.Events(ctx, "0", 10, 0)
	fmt.Println(len(evs), evs[0].To)
	// Output:
	// [checkout] a1b2 registering
	// 1 configuring
}

// A client keeps a live view of a service's running instances with a
// Watcher, and waits for changes with Next (or selects on View.Changed).
func ExampleRegistry_Watch() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer c.Close()
	ctx := context.Background()
	r := registry.New(c)

	w, err := r.Watch("checkout")
	if err != nil {
		panic(err)
	}
	defer w.Close()
	if err := w.WaitSynced(ctx); err != nil {
		panic(err)
	}
	v := w.View()
	fmt.Println(len(v.Running), v.Connected)

	// An instance reaches running, as the lifecycle reports it.
	m, _ := r.Member(registry.Entry{Service: "checkout", Instance: "a1b2"})
	defer m.Close(ctx)
	m.Update(registry.Entry{Status: "running", Addr: "10.0.0.7:8080"},
		&registry.Event{Event: "health_serving", From: "serving_health", To: "running"})

	for len(v.Running) == 0 {
		if v, err = w.Next(ctx, v); err != nil {
			panic(err)
		}
	}
	// Running is what a request path reads: lock-free, never an expired entry.
	for _, in := range w.Running() {
		fmt.Println(in.Instance, in.Addr)
	}
	// Output:
	// 0 true
	// a1b2 10.0.0.7:8080
}
