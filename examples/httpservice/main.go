// Command httpservice is a net/http service on the lifecycle, the shape most
// services of the fleet have:
//
//	go run ./examples/httpservice                 # then: curl 127.0.0.1:8080/
//	HTTP_ADDR=127.0.0.1:0 REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/httpservice
//
// It binds its listener in OnStart (phase 7), so a taken port fails the boot
// there, naming the address; serves in Run; and drains in OnStop (shutdown
// step S4) with http.Server.Shutdown, which closes the listener and waits for
// the requests in flight. Requests keep being served from the moment a stop
// or a restart begins until then: through the drain delay (SG_DRAIN_DELAY)
// and the shutdown steps before S4.
//
// It implements service.Advertiser: phase 8 writes the address the listener
// bound (with the port picked when HTTP_ADDR's port is 0) in the registry
// entry's addr field, where registry.Watcher and package balancer find it.
// SG_ADVERTISE_ADDR overrides it, for clients that reach the process
// elsewhere than where it binds (a pod IP, a NAT). Bound to all interfaces
// (0.0.0.0, ::), it advertises the host name with the port.
//
// It implements service.Binder to answer with its instance id and log
// through the instance's logger, whose lines name the service and the
// instance. GET / answers 200 with the instance id, one line of text.
//
// Environment: HTTP_ADDR (default 127.0.0.1:8080; a bad value exits 2) and
// every variable of the library (SG_SERVICE_NAME defaults to httpservice,
// the health server to 127.0.0.1:9091 so that it runs beside cmd/demo).
// Without REDIS_URL it serves without registering: nothing advertises it and
// no control op reaches it. With REDIS_URL it registers, and, given
// SG_CONTROL_KEY, takes signed restart ops: `sgctl restart httpservice
// --max-unavailable 1 --wait` restarts a fleet of them one at a time, and a
// client going through the balancer loses no request when SG_DRAIN_DELAY is
// set (see BENCHMARKS.md for the measurement).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/stargazer/lifecycle/process"
	"github.com/stargazer/lifecycle/service"
)

// Defaults of the example.
const (
	envHTTPAddr     = "HTTP_ADDR"
	defaultHTTPAddr = "127.0.0.1:8080"
	defaultHealth   = "127.0.0.1:9091"
	serviceName     = "httpservice"
)

func main() {
	os.Exit(run(context.Background(), os.Getenv, os.Stderr))
}

func run(ctx context.Context, getenv func(string) string, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	addr := getenv(envHTTPAddr)
	if addr == "" {
		addr = defaultHTTPAddr
	}
	if err := validListenAddr(addr); err != nil {
		log.Error("configuration error", "error", &service.ConfigError{Name: envHTTPAddr, Value: addr, Err: err})
		return process.ExitConfig
	}
	// No WithLogger: Main's logger, with the service and instance
	// attributes, reaches the server through Bind.
	return process.Config{Getenv: getenv, Stderr: stderr}.Run(ctx, newServer(addr),
		service.WithServiceName(serviceName),
		service.WithVersion("httpservice-1"),
		service.WithHealthAddr(defaultHealth),
	)
}

// validListenAddr accepts what net.Listen("tcp", addr) can bind: host:port,
// the host possibly empty, the port 0-65535.
func validListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("want host:port such as 127.0.0.1:8080 (port 0 picks a free one)")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q: want 0-65535 (0 picks a free one)", port)
	}
	return nil
}

// server is the service: an http.Server on a listener it binds in OnStart.
type server struct {
	addr string       // HTTP_ADDR
	id   string       // the instance id it answers with (Bind)
	log  *slog.Logger // the instance's logger (Bind)
	srv  *http.Server

	ln     net.Listener
	once   sync.Once
	served chan struct{} // closed when Serve has returned
	err    error         // Serve's error, once served is closed
}

func newServer(addr string) *server {
	s := &server{addr: addr, served: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, s.id+"\n")
	})
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
	}
	return s
}

// Bind takes what the server needs of its instance (service.Binder), before
// any phase: the instance id it answers with (SG_INSTANCE_ID, or the one
// the library made; a restart by exec keeps it) and the logger, whose lines
// name the service and the instance.
func (s *server) Bind(in *service.Instance) {
	s.id, s.log = in.ID(), in.Logger()
	s.srv.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	if in.Redis() == nil {
		s.log.Info("REDIS_URL is unset: serving without the registry (nothing advertises this instance, no control op reaches it)")
	}
}

// OnStart binds the listener (phase 7): a port that is taken fails the boot
// here, before the instance registers.
func (s *server) OnStart(ctx context.Context) error {
	ln, err := new(net.ListenConfig).Listen(ctx, "tcp", s.addr)
	if err != nil {
		return fmt.Errorf("listening on %s (%s): %w", s.addr, envHTTPAddr, err)
	}
	s.ln = ln
	s.log.Info("listening", "addr", ln.Addr().String())
	return nil
}

// AdvertiseAddr is the address the listener bound, for the registry entry
// (service.Advertiser): phase 8 reads it once OnStart has returned.
func (s *server) AdvertiseAddr() string {
	host, port, err := net.SplitHostPort(s.ln.Addr().String())
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if host, err = os.Hostname(); err != nil {
			return ""
		}
	}
	return net.JoinHostPort(host, port)
}

// Run serves until its context is cancelled (a stop or a restart, after the
// drain delay). Serving goes on after Run returns, through the shutdown steps,
// until OnStop drains it; an error of Serve fails the instance.
func (s *server) Run(ctx context.Context) error {
	s.once.Do(func() {
		go func() {
			defer close(s.served)
			s.err = s.srv.Serve(s.ln)
		}()
	})
	select {
	case <-ctx.Done():
		return nil
	case <-s.served:
		return fmt.Errorf("serving HTTP on %s: %w", s.ln.Addr(), s.err)
	}
}

// OnStop drains (shutdown step S4): http.Server.Shutdown closes the listener,
// then the idle connections, and waits for the requests in flight until ctx
// ends (the shutdown timeout); then it waits for Serve to return.
func (s *server) OnStop(ctx context.Context) error {
	if s.ln == nil {
		return nil // OnStart failed before binding
	}
	err := s.srv.Shutdown(ctx)
	_ = s.ln.Close() // Serve never ran when a stop came before Run
	started := true
	s.once.Do(func() { started = false; close(s.served) })
	if started {
		<-s.served
	}
	if err != nil {
		return fmt.Errorf("draining HTTP on %s: %w", s.ln.Addr(), err)
	}
	s.log.Info("HTTP drained", "addr", s.ln.Addr().String())
	return nil
}
