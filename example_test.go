package lifecycle_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/stargazer/lifecycle"
)

type greeter struct{}

func (greeter) OnStart(context.Context) error { fmt.Println("OnStart"); return nil }
func (greeter) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (greeter) OnStop(context.Context) error  { fmt.Println("OnStop"); return nil }

// New, Boot and Shutdown drive an instance by hand, as a test or an embedding
// program would; Main does the same from the environment and signals. Without a
// Redis client the ping is skipped and nothing is registered.
func ExampleNew() {
	in, err := lifecycle.New(greeter{},
		lifecycle.WithServiceName("greeter"),
		lifecycle.WithInstanceID("greeter-1"),
		lifecycle.WithoutHealthServer(),
		lifecycle.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		lifecycle.WithTransitionObserver(lifecycle.ObserverFunc(func(_ context.Context, t lifecycle.Transition) {
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
