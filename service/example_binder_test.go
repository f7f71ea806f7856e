package service_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/stargazer/lifecycle/service"
)

// consumer keeps its instance (service.Binder) and stops taking work when the
// instance begins to leave.
type consumer struct {
	in      *service.Instance
	running chan struct{} // closed as Run begins
}

func (c *consumer) Bind(in *service.Instance) { c.in = in }

func (c *consumer) OnStart(context.Context) error { return nil }
func (c *consumer) OnStop(context.Context) error  { return nil }

func (c *consumer) Run(ctx context.Context) error {
	close(c.running)
	// Take work until the instance begins to leave; a real consumer reads a
	// stream here, through c.in.BlockingRedis, and logs through
	// c.in.Logger().
	<-c.in.Leaving().Done()
	fmt.Println("no new work:", context.Cause(c.in.Leaving()))
	// The work in hand goes on under ctx, which a drain delay keeps alive.
	<-ctx.Done()
	return nil
}

// A Service that implements Binder gets its instance from New, before any
// phase (under process.Main too): its Redis client, its logger, and the
// Leaving context, which ends the moment a stop is asked for.
func ExampleBinder() {
	c := &consumer{running: make(chan struct{})}
	in, err := service.New(c,
		service.WithServiceName("consumer"),
		service.WithInstanceID("consumer-1"),
		service.WithoutHealthServer(),
		service.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	)
	if err != nil {
		panic(err)
	}
	fmt.Println("bound:", c.in == in, "redis:", in.Redis() != nil)
	done := make(chan error, 1)
	go func() { done <- in.Run(context.Background()) }()
	<-c.running
	in.RequestStop()
	fmt.Println("run:", <-done)
	// Output:
	// bound: true redis: false
	// no new work: lifecycle: leaving: a stop was asked for
	// run: <nil>
}
