// The Server: its listener, its life (Start, Shutdown) and the three
// endpoints, which answer from the verdict.

package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/stargazer/lifecycle/phases"
)

type serverState int

const (
	stateNew serverState = iota
	stateStarted
	stateClosed
)

// Server is the health HTTP server. Build it with New; Handler works without
// listening; Start listens and Shutdown stops.
type Server struct {
	cfg     config
	src     StateSource
	handler http.Handler

	// life is cancelled by Shutdown: it stops the refresher and every running
	// check.
	life       context.Context
	lifeCancel context.CancelFunc

	mu       sync.Mutex // guards state, addr, ln, srv, launched and wg.Add
	state    serverState
	addr     string
	ln       net.Listener
	srv      *http.Server
	launched bool
	wg       sync.WaitGroup // serve loop, refresher, check runs

	shutdownOnce sync.Once
	shutdownErr  error
}

// New validates the options and builds the server's mux; it does not listen.
// It fails, naming the bad input, on an invalid address (wrapping
// ErrInvalidAddr), an empty or duplicate check name, or a handler pattern that
// net/http rejects or that conflicts with another.
func New(src StateSource, opts ...Option) (*Server, error) {
	if src == nil {
		return nil, errors.New("health: nil StateSource")
	}
	cfg := newConfig(opts)
	if err := validateAddr(cfg.addr); err != nil {
		return nil, err
	}
	seen := map[string]bool{LifecycleCheck: true}
	for _, c := range cfg.checks {
		if c.name == "" {
			return nil, errors.New("health: a check has an empty name")
		}
		if seen[c.name] {
			return nil, fmt.Errorf("health: check %q registered twice", c.name)
		}
		seen[c.name] = true
		if c.redis && c.every == 0 {
			c.every = cfg.redisInterval
		}
	}
	s := &Server{cfg: cfg, src: src}
	s.life, s.lifeCancel = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathLive, s.serveLive)
	mux.HandleFunc("GET "+PathReady, s.serveReady)
	mux.HandleFunc("GET "+PathHealth, s.serveHealth)
	for _, m := range cfg.handlers {
		if err := handle(mux, m); err != nil {
			return nil, err
		}
	}
	s.handler = mux
	return s, nil
}

// handle mounts m, turning ServeMux's panic on a bad or conflicting pattern
// into an error.
func handle(mux *http.ServeMux, m mount) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("health: handler pattern %q: %v", m.pattern, r)
		}
	}()
	mux.Handle(m.pattern, m.h)
	return nil
}

func validateAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w %q: %w", ErrInvalidAddr, addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%w %q: port %q is not a number in [0, 65535]", ErrInvalidAddr, addr, port)
	}
	return nil
}

// Handler returns the server's handler: /livez, /readyz, /healthz and the
// WithHandler mounts. It answers from the cached check results, with or
// without Start (call Refresh to fill the cache when not started).
func (s *Server) Handler() http.Handler { return s.handler }

// Addr returns the bound address once Start succeeded (the real port when the
// configured one was 0), and the configured address before.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.addr != "" {
		return s.addr
	}
	return s.cfg.addr
}

// Start binds the listener now, so that an address already in use or
// otherwise unusable is returned here, naming the address. It then runs one
// round of checks (bounded by the check timeout) so the first probe sees real
// results, and serves and refreshes the checks every interval on goroutines
// the Server owns until Shutdown.
//
// ctx bounds the bind and the first round only: cancelling it later does not
// stop the server. A second Start returns ErrStarted; Start after Shutdown
// returns ErrClosed.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	switch s.state {
	case stateStarted:
		s.mu.Unlock()
		return ErrStarted
	case stateClosed:
		s.mu.Unlock()
		return ErrClosed
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.addr)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("health: listen on %q: %w", s.cfg.addr, err)
	}
	s.state, s.ln, s.addr = stateStarted, ln, ln.Addr().String()
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: min(5*time.Second, s.cfg.readTimeout),
		ReadTimeout:       s.cfg.readTimeout,
		IdleTimeout:       s.cfg.idleTimeout,
		ErrorLog:          slog.NewLogLogger(s.cfg.log.Handler(), slog.LevelWarn),
	}
	s.mu.Unlock()

	s.Refresh(ctx)

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stateClosed { // Shutdown ran during the first round and closed ln
		return ErrClosed
	}
	s.launched = true
	srv := s.srv
	s.wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.log.Error("health server stopped serving", "addr", s.addr, "error", err)
		}
	})
	s.wg.Go(s.refreshLoop)
	s.cfg.log.Info("health server listening", "addr", s.addr)
	return nil
}

// Shutdown stops the server: it cancels the refresher and any running check,
// stops serving with http.Server.Shutdown (the listener closes at once,
// in-flight probes finish), then waits for the serve loop, the refresher and
// the checks to return. If ctx ends first, open connections are closed and
// Shutdown returns an error wrapping ctx.Err(); a check that ignores its
// context may then still be running.
//
// Shutdown is safe before Start (Start then returns ErrClosed) and
// idempotent: later and concurrent calls wait for the first and return its
// result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() { s.shutdownErr = s.shutdown(ctx) })
	return s.shutdownErr
}

func (s *Server) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.state = stateClosed
	srv, ln, launched, addr := s.srv, s.ln, s.launched, s.addr
	s.mu.Unlock()
	s.lifeCancel()

	var errs []error
	switch {
	case launched:
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
			errs = append(errs, fmt.Errorf("health: shutdown of %s: %w", addr, err))
		}
	case ln != nil: // Start is still in its first round: it sees stateClosed
		_ = ln.Close()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("health: waiting for the server's goroutines: %w", ctx.Err()))
	}
	if launched {
		s.cfg.log.Info("health server stopped", "addr", addr)
	}
	return errors.Join(errs...)
}

func (s *Server) serveLive(w http.ResponseWriter, _ *http.Request) {
	v := s.evaluate()
	status, out := StatusPass, ""
	if v.lifecycle.Status == StatusFail { // failed or wedged
		status, out = StatusFail, v.lifecycle.Output
	}
	write(w, v, status, out)
}

func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	v := s.evaluate()
	var status, out string
	switch {
	case v.role != phases.RoleServing:
		status, out = StatusFail, fmt.Sprintf("state %q is not running", v.snap.State)
	case v.snap.ShuttingDown:
		status, out = StatusFail, "shutting down"
	case !v.requiredOK:
		status, out = StatusFail, v.requiredReason
	default:
		// Ready; optional failures and degradation still show as warn.
		status, out = v.worst, v.reason
	}
	write(w, v, status, out)
}

func (s *Server) serveHealth(w http.ResponseWriter, _ *http.Request) {
	v := s.evaluate()
	write(w, v, v.worst, v.reason)
}

func write(w http.ResponseWriter, v verdict, status, output string) {
	body, err := json.Marshal(Response{
		Status:      status,
		Version:     v.snap.Version,
		ServiceID:   v.snap.Instance,
		Description: v.snap.Service,
		State:       v.snap.State,
		Phase:       v.snap.Phase,
		Output:      output,
		Checks:      v.checks,
	})
	if err != nil { // cannot happen: the types marshal; answer fail all the same
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Cache-Control", "no-store")
	code := http.StatusOK
	if status == StatusFail {
		code = http.StatusServiceUnavailable
	}
	w.WriteHeader(code)
	_, _ = w.Write(body)
}
