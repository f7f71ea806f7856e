// Command worker is the README's complete service: a ticker under the
// lifecycle, run by process.Main. Its test runs it as a process.
//
//	go run ./examples/worker                                       # no Redis: no registry, no control ops
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/worker    # registered as worker
package main

import (
	"context"
	"time"

	"github.com/stargazer/lifecycle/process"
	"github.com/stargazer/lifecycle/service"
)

type worker struct{ ticker *time.Ticker }

// OnStart starts the service's machinery (phase 7).
func (w *worker) OnStart(ctx context.Context) error {
	w.ticker = time.NewTicker(time.Second)
	return nil
}

// Run works until ctx is cancelled (SIGTERM, or a restart op), then returns.
func (w *worker) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.ticker.C:
			// do the work
		}
	}
}

// OnStop releases what OnStart started (shutdown step S4).
func (w *worker) OnStop(ctx context.Context) error {
	w.ticker.Stop()
	return nil
}

func main() {
	process.Main(&worker{}, service.WithServiceName("worker"))
}
