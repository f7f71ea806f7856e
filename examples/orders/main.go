// Command orders is a service made of two components under one lifecycle:
// an HTTP API that takes orders into a Redis stream, and a worker that
// processes them from it through a consumer group.
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/orders
//	curl -d '{"item":"tea","qty":2}' 127.0.0.1:8081/orders   # 202 {"id":"1767225600000-0","status":"accepted"}
//	curl 127.0.0.1:8081/orders/1767225600000-0                # {"id":...,"status":"processed","by":"host-1a2b3c4d"}
//
// The service implements service.Binder: it keeps its *service.Instance,
// whose Redis client its components share (Instance.Redis), whose logger
// they log through (Instance.Logger: every line names the service and the
// instance), and whose Leaving context tells the worker to take no new
// order. Both components run under Run (errgroup): either one failing ends
// the other and fails the instance (exit 1). README.md says why, and what a
// stop does to an order in hand.
//
// Environment: REDIS_URL (required: the orders live in Redis; unset exits
// 2), HTTP_ADDR (default 127.0.0.1:8081), ORDERS_BLOCK (the worker's
// XREADGROUP BLOCK time, default 30s), ORDERS_WORK (how long processing one
// order takes, standing in for real work; default 0), and every variable of
// the library (SG_SERVICE_NAME defaults to orders, the health server to
// 127.0.0.1:9092, beside cmd/demo and examples/httpservice). Set
// SG_DRAIN_DELAY longer than ORDERS_WORK for a stop to finish the order in
// hand.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/process"
	"github.com/stargazer/lifecycle/service"
)

// Settings of the example and their defaults.
const (
	envHTTPAddr     = "HTTP_ADDR"
	envBlock        = "ORDERS_BLOCK"
	envWork         = "ORDERS_WORK"
	defaultHTTPAddr = "127.0.0.1:8081"
	defaultBlock    = 30 * time.Second
	defaultHealth   = "127.0.0.1:9092"
	serviceName     = "orders"
)

func main() {
	os.Exit(run(context.Background(), os.Getenv, os.Stderr))
}

func run(ctx context.Context, getenv func(string) string, stderr io.Writer) int {
	s, err := parseSettings(getenv)
	if err != nil {
		slog.New(slog.NewTextHandler(stderr, nil)).Error("configuration error", "error", err)
		return process.ExitConfig
	}
	return process.Config{Getenv: getenv, Stderr: stderr}.Run(ctx, newOrders(s), options()...)
}

// options are the example's options for Main. No WithLogger: Main's logger
// (a text handler on stderr), with the service and instance attributes,
// reaches the service through Bind.
func options() []service.Option {
	return []service.Option{
		service.WithServiceName(serviceName),
		service.WithVersion("orders-1"),
		service.WithHealthAddr(defaultHealth),
	}
}

// settings are the example's own.
type settings struct {
	httpAddr string
	block    time.Duration // the worker's XREADGROUP BLOCK
	workTime time.Duration // processing time of one order
}

// parseSettings reads them; an error is a *service.ConfigError naming the
// variable (exit 2).
func parseSettings(getenv func(string) string) (settings, error) {
	s := settings{httpAddr: defaultHTTPAddr, block: defaultBlock}
	if getenv(fleetenv.RedisURL) == "" {
		return s, &service.ConfigError{Name: fleetenv.RedisURL, Value: "", Err: errors.New("orders keeps its orders in Redis: set it")}
	}
	if v := getenv(envHTTPAddr); v != "" {
		if _, port, err := net.SplitHostPort(v); err != nil {
			return s, &service.ConfigError{Name: envHTTPAddr, Value: v, Err: errors.New("want host:port such as 127.0.0.1:8081 (port 0 picks a free one)")}
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return s, &service.ConfigError{Name: envHTTPAddr, Value: v, Err: fmt.Errorf("port %q: want 0-65535", port)}
		}
		s.httpAddr = v
	}
	var err error
	if v := getenv(envBlock); v != "" {
		// Redis counts BLOCK in milliseconds; 0 would block for ever.
		if s.block, err = time.ParseDuration(v); err != nil || s.block < time.Millisecond {
			return s, &service.ConfigError{Name: envBlock, Value: v, Err: errors.New("want a duration of at least 1ms, such as 30s")}
		}
	}
	if v := getenv(envWork); v != "" {
		if s.workTime, err = time.ParseDuration(v); err != nil || s.workTime < 0 {
			return s, &service.ConfigError{Name: envWork, Value: v, Err: errors.New("want a duration >= 0, such as 100ms")}
		}
	}
	return s, nil
}

// The consumer group the workers of every instance share; each instance
// reads as a consumer named by its instance id.
const group = "workers"

// orders is the service: the HTTP API (api.go) and the worker (worker.go).
type orders struct {
	settings
	// listen binds the API's listener: net.ListenConfig's, or a test's.
	listen func(ctx context.Context, addr string) (net.Listener, error)

	// From Bind on.
	in        *service.Instance
	log       *slog.Logger
	rdb       redis.UniversalClient // the instance's: never closed here
	stream    string                // the orders taken, in arrival order
	processed string                // hash: order id -> the instance that processed it

	ln net.Listener // from OnStart on
}

func newOrders(s settings) *orders {
	return &orders{settings: s, listen: func(ctx context.Context, addr string) (net.Listener, error) {
		return new(net.ListenConfig).Listen(ctx, "tcp", addr)
	}}
}

// Bind keeps the instance (service.Binder): New calls it before any phase.
// The keys share the service's hash tag, so that the worker's MULTI/EXEC
// (an effect and its XACK) stays in one slot of a Redis Cluster.
func (o *orders) Bind(in *service.Instance) {
	o.in, o.log, o.rdb = in, in.Logger(), in.Redis()
	o.stream = "orders:{" + in.Name() + "}:incoming"
	o.processed = "orders:{" + in.Name() + "}:processed"
}

// OnStart creates the consumer group (phase 7), from the start of the
// stream so that orders taken before any worker ran are processed too, and
// binds the API's listener: a port that is taken fails the boot here,
// naming it.
func (o *orders) OnStart(ctx context.Context) error {
	if o.rdb == nil {
		return errors.New("orders needs Redis: set REDIS_URL")
	}
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := o.rdb.XGroupCreateMkStream(gctx, o.stream, group, "0").Err()
	cancel()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("creating consumer group %s on %s: %w", group, o.stream, err)
	}
	ln, err := o.listen(ctx, o.httpAddr)
	if err != nil {
		return fmt.Errorf("listening on %s (%s): %w", o.httpAddr, envHTTPAddr, err)
	}
	o.ln = ln
	o.log.Info("listening", "addr", ln.Addr().String())
	return nil
}

// Run runs both components until ctx ends (a stop, after any drain delay)
// or one of them fails. errgroup cancels the other's context at the first
// error and returns that error once both returned: the instance fails with
// it. The worker returns nil when the instance begins to leave, and the API
// goes on serving until ctx ends.
func (o *orders) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return o.serveAPI(gctx) })
	g.Go(func() error { return o.work(gctx) })
	return g.Wait()
}

// OnStop closes the listener when Run never ran (a stop between OnStart and
// Run); after Run, serveAPI closed it.
func (o *orders) OnStop(context.Context) error {
	if o.ln != nil {
		_ = o.ln.Close()
	}
	return nil
}
