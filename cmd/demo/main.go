// Command demo is a service built on github.com/stargazer/lifecycle/service. It does
// visible work in every phase and logs one line per transition, so you can watch
// the boot contract run:
//
//	go run ./cmd/demo
//
// Without REDIS_URL it starts an embedded Redis (miniredis) on loopback, logs
// its address, and accepts unsigned control ops (insecure mode, which it logs),
// so that sgctl works against it without a key. With REDIS_URL it is like any
// service: control ops are rejected unless SG_CONTROL_KEY (signed ops) or
// SG_CONTROL_INSECURE=true is set. Three knobs slow down, break or hang a
// boot on purpose:
//
//	DEMO_PHASE_DELAY=loading_modules=500ms,starting=1s   extra time spent in phases
//	DEMO_FAIL_PHASE=building_adapters                    that phase's work fails
//	DEMO_HANG_PHASE=starting                             that phase's work never returns, ignoring its context
//
// A hung phase is ended by the boot timeout (SG_BOOT_TIMEOUT, default 5m): try
// DEMO_HANG_PHASE=starting SG_BOOT_TIMEOUT=3s.
//
// Every variable of the library works too (SG_HEALTH_PORT, SG_BOOT_JITTER, ...).
// A pull control op (sgctl pull demo) re-reads the two knobs; a restart op
// replaces the process with a fresh copy keeping its instance id.
// Stop it with Ctrl-C; a second Ctrl-C exits at once (with SG_DRAIN_DELAY set,
// the second one skips the drain delay and the third exits at once).
package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"

	"github.com/alicebob/miniredis/v2"

	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/process"
	"github.com/stargazer/lifecycle/service"
)

func main() {
	os.Exit(run(context.Background(), os.Getenv, os.Stderr))
}

func run(ctx context.Context, getenv func(string) string, stderr *os.File) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	knobs, err := parseKnobs(getenv)
	if err != nil {
		log.Error("configuration error", "error", err)
		return process.ExitConfig
	}
	// Validate the library's variables before starting anything, so a bad value
	// exits 2 without an embedded Redis coming and going.
	env, err := process.ParseEnv(getenv)
	if err != nil {
		log.Error("configuration error", "error", err)
		return process.ExitConfig
	}

	// The service counts its ticks through the instance's own client
	// (Instance.Redis, from Bind on): the one process.Config.Run builds from
	// REDIS_URL, or the embedded Redis's below. ParseEnv's is not used.
	if env.Redis != nil {
		_ = env.Redis.Close()
	}
	opts := []service.Option{
		service.WithLogger(log),
		service.WithServiceName("demo"), // SG_SERVICE_NAME, when set, wins
		service.WithVersion("demo-1"),
		service.WithHealthAddr(net.JoinHostPort("127.0.0.1", strconv.Itoa(service.DefaultHealthPort))),
	}
	if env.RedisURL == "" {
		mr := miniredis.NewMiniRedis()
		if err := mr.StartAddr("127.0.0.1:0"); err != nil {
			log.Error("cannot start the embedded redis", "error", err)
			return process.ExitFailed
		}
		defer mr.Close()
		log.Info("embedded redis (miniredis) started; set REDIS_URL to use a real one", "addr", mr.Addr())
		client, err := fleetenv.NewRedisClient("redis://" + mr.Addr() + "/0")
		if err != nil {
			log.Error("cannot build a client of the embedded redis", "error", err)
			return process.ExitFailed
		}
		defer client.Close() // WithRedis's client is its giver's to close
		// A playground: sgctl works against it without a key. SG_CONTROL_KEY
		// or SG_CONTROL_INSECURE, when set, still decide.
		opts = append(opts, service.WithRedis(client), service.WithControlInsecure(true))
		if getenv(fleetenv.ControlKey) == "" && getenv(fleetenv.ControlInsecure) == "" {
			log.Warn("insecure control mode on the embedded redis: unsigned control ops are accepted; "+
				"with REDIS_URL set the demo, like any service, needs SG_CONTROL_KEY (or SG_CONTROL_INSECURE=true)", "addr", mr.Addr())
		}
	}

	svc := newService(knobs)
	opts = append(opts, service.WithPullHandler(svc.pull(getenv)))
	return process.Config{Getenv: getenv}.Run(ctx, svc, opts...)
}
