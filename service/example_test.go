package service_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/service"
)

type greeter struct{}

func (greeter) OnStart(context.Context) error { fmt.Println("OnStart"); return nil }
func (greeter) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (greeter) OnStop(context.Context) error  { fmt.Println("OnStop"); return nil }

// New, Boot and Shutdown drive an instance by hand, as a test or an embedding
// program would; Main does the same from the environment and signals. Without a
// Redis client the ping is skipped and nothing is registered.
func ExampleNew() {
	in, err := service.New(greeter{},
		service.WithServiceName("greeter"),
		service.WithInstanceID("greeter-1"),
		service.WithoutHealthServer(),
		service.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		service.WithTransitionObserver(lifecycle.ObserverFunc(func(_ context.Context, t lifecycle.Transition) {
			fmt.Printf("%s -> %s (%s)\n", t.From, t.To, t.Event)
		})),
	)
	if err != nil {
		panic(err)
	}
	if err := in.Boot(context.Background()); err != nil {
		panic(err)
	}
	fmt.Println("state:", in.State())
	if err := in.Shutdown(context.Background()); err != nil {
		panic(err)
	}
	fmt.Println("state:", in.State())
	// Output:
	// init -> connecting (connect)
	// connecting -> configuring (ping_skipped)
	// configuring -> instrumenting (configured)
	// instrumenting -> loading_modules (instrumented)
	// loading_modules -> building_adapters (modules_loaded)
	// building_adapters -> starting (adapters_built)
	// OnStart
	// starting -> registering (started)
	// registering -> serving_health (registered)
	// serving_health -> running (health_serving)
	// state: running
	// running -> stopping_daemons (stop)
	// stopping_daemons -> stopping_health (daemons_stopped)
	// stopping_health -> deregistering (health_stopped)
	// deregistering -> cleaning_up (deregistered)
	// OnStop
	// cleaning_up -> stopped (cleaned_up)
	// state: stopped
}

// slowConfig's configuration never arrives; it gives up when its context ends.
type slowConfig struct{ greeter }

func (slowConfig) Configure(ctx context.Context) error {
	<-ctx.Done() // waiting for a configuration service that does not answer
	return ctx.Err()
}

// A phase that runs past its budget fails the boot with a *PhaseTimeoutError
// naming the phase; the instance unwinds and ends in failed. A phase that
// ignored its cancelled context would also be given up on, PhaseGrace later,
// with Abandoned set.
func ExampleWithPhaseTimeout() {
	in, err := service.New(slowConfig{},
		service.WithoutHealthServer(),
		service.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		service.WithPhaseTimeout(phases.Configuring, 50*time.Millisecond),
	)
	if err != nil {
		panic(err)
	}
	err = in.Run(context.Background())
	var late *service.PhaseTimeoutError
	if errors.As(err, &late) {
		fmt.Printf("phase %s ran past its budget of %s (abandoned: %v)\n", late.State, late.Budget, late.Abandoned)
	}
	fmt.Println("state:", in.State())
	// Output:
	// phase configuring ran past its budget of 50ms (abandoned: false)
	// state: failed
}
