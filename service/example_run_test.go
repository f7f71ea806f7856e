package service_test

import (
	"context"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/service"
)

// worker does one unit of work and returns: a clean stop.
type worker struct{}

func (*worker) OnStart(context.Context) error { return nil }
func (*worker) Run(context.Context) error     { fmt.Println("working"); return nil }
func (*worker) OnStop(context.Context) error  { return nil }

// runWorker is the package documentation's program: an instance of worker,
// registered in the Redis of rdb, run to its end.
func runWorker(ctx context.Context, rdb redis.UniversalClient) error {
	in, err := service.New(&worker{},
		service.WithServiceName("worker"),
		service.WithRedis(rdb),                // the registry and control ops; without it, neither
		service.WithHealthAddr("127.0.0.1:0"), // /livez, /readyz, /healthz (default :9090)
		service.WithBootJitter(0),             // no random delay before the ping (default up to 2s)
	)
	if err != nil {
		return err // a *ConfigError naming the option
	}
	return in.Run(ctx) // boots, runs, and shuts down when ctx ends or Run returns
}

// Run boots an instance, runs the service and shuts it down; the instance is
// registered meanwhile, and gone from the registry at the end.
func ExampleInstance_Run() {
	mr, _ := miniredis.Run()
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	err := runWorker(context.Background(), rdb)
	fmt.Println("run:", err)
	events, _ := rdb.XRange(context.Background(), "sg:events", "-", "+").Result()
	fmt.Println("last event:", events[len(events)-1].Values["to"], "; entry left:", mr.Exists("sg:registry:service:{worker}:"+events[0].Values["instance"].(string)))
	// Output:
	// working
	// run: <nil>
	// last event: stopped ; entry left: false
}
