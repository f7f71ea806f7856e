// Package health serves a service instance's health over HTTP: /livez, /readyz
// and /healthz, in the application/health+json shape of
// draft-inadarei-api-health-check.
//
//   - /livez answers 200 unless the instance is in state failed or is wedged:
//     stuck in one state that is neither terminal nor a working state
//     (running, pulling, draining) for longer than WithStuckAfter (default
//     5m). A supervisor restarts on 503. An instance kept draining by an
//     operator is alive however long it drains.
//   - /readyz answers 200 only in state running, when no shutdown has begun and
//     every required check passes (Redis, when it is required); 503 otherwise,
//     in particular in draining (out of rotation) and from the first shutdown
//     state on.
//   - /healthz is the whole picture: status pass, warn or fail; 200 for pass and
//     warn, 503 for fail.
//
// Every body carries status, state, phase, serviceId (the instance),
// description (the service), version, output (why, when not pass) and checks:
// a map from "component:measurement" to results with status, componentType,
// observedValue (the check's duration, observedUnit "ms"), output and time.
// The lifecycle itself is reported as the "lifecycle:state" check, whose
// observedValue is the time spent in the current state, in seconds.
//
// Checks run in the background, on a goroutine the Server owns (every 5s by
// default) and on Refresh; probes answer from the cached results, so a probe
// never waits on Redis or any other dependency. A check that has not run yet
// reports warn, and a required one keeps /readyz at 503 until it passes.
//
// The Redis check (WithRedis) runs every 30s while it passes
// (DefaultRedisInterval, WithRedisInterval) and every round while it fails:
// a PING every 5s would be most of an idle instance's load on Redis (a fleet
// of 10,000 sends 2,000 a second). A Redis that stops answering shows within
// 30s, a Redis that is back within one round. Any check can have such an
// interval (Every).
//
// The endpoints answer GET and HEAD (405 otherwise) with Cache-Control:
// no-store. The server closes a connection that takes longer than 10s to
// send a request (5s for its headers) or stays idle for 30s between requests
// (WithReadTimeout, WithIdleTimeout); it sets no write timeout, so a handler
// mounted with WithHandler may stream for as long as it needs.
//
// The package does not import the lifecycle root package: the root implements
// StateSource, and states are plain strings (see the phases package).
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
	"sync/atomic"
	"time"
)

// ContentType is the media type of every body.
const ContentType = "application/health+json"

// Statuses, as in draft-inadarei-api-health-check.
const (
	StatusPass = "pass"
	StatusWarn = "warn"
	StatusFail = "fail"
)

// The paths of the endpoints, for probes and their configuration (see
// deploy/kubernetes in the repository).
const (
	PathLive   = "/livez"
	PathReady  = "/readyz"
	PathHealth = "/healthz"
)

// LifecycleCheck is the key under which the instance's state is reported in
// the body's checks.
const LifecycleCheck = "lifecycle:state"

// The lifecycle states this package gives a meaning to; every other state is a
// transitional (boot or shutdown) one.
const (
	stateRunning  = "running"
	statePulling  = "pulling"
	stateDraining = "draining"
	stateStopped  = "stopped"
	stateFailed   = "failed"
)

// Errors callers branch on.
var (
	// ErrInvalidAddr is wrapped by New when the listen address is not
	// "host:port" with a numeric port in [0, 65535].
	ErrInvalidAddr = errors.New("health: invalid address")
	// ErrStarted is returned by a second call to Start.
	ErrStarted = errors.New("health: server already started")
	// ErrClosed is returned by Start after Shutdown.
	ErrClosed = errors.New("health: server closed")
)

// Snapshot is the lifecycle state the health endpoints report.
type Snapshot struct {
	Service  string // reported as "description"
	Instance string // reported as "serviceId"
	Version  string
	// State is a lifecycle state name ("init" ... "running" ... "failed").
	State string
	// Phase is the state's phase label ("1".."9", "S1".."S4"), "" if none.
	Phase string
	// Since is when State was entered; the zero time disables wedge detection.
	Since time.Time
	// Degraded is set when the instance booted without the Redis it wanted.
	Degraded bool
	// RedisRequired makes the "redis:ping" check required whatever WithRedis said.
	RedisRequired bool
	// ShuttingDown makes /readyz answer 503 even while State is still running.
	ShuttingDown bool
}

// StateSource reports the instance's current lifecycle state. Snapshot is
// called on every probe, concurrently, and must be cheap and non-blocking.
type StateSource interface {
	Snapshot() Snapshot
}

// Response is the body of every endpoint.
type Response struct {
	Status      string                   `json:"status"`
	Version     string                   `json:"version,omitempty"`
	ServiceID   string                   `json:"serviceId,omitempty"`
	Description string                   `json:"description,omitempty"`
	State       string                   `json:"state"`
	Phase       string                   `json:"phase"`
	Output      string                   `json:"output,omitempty"`
	Checks      map[string][]CheckResult `json:"checks"`
}

// CheckResult is one entry of Response.Checks.
type CheckResult struct {
	Status        string    `json:"status"`
	ComponentType string    `json:"componentType,omitempty"`
	ObservedValue float64   `json:"observedValue"`
	ObservedUnit  string    `json:"observedUnit,omitempty"`
	Output        string    `json:"output,omitempty"`
	Time          time.Time `json:"time,omitzero"`
}

// check is a registered check and its cached result.
type check struct {
	name          string
	fn            CheckFunc
	componentType string
	passOutput    string
	required      bool
	redis         bool
	every         time.Duration // the refresher runs it about this often while it passes; 0: every round
	inflight      atomic.Bool   // a run is in progress: Refresh does not start another

	mu   sync.Mutex
	last result
}

type result struct {
	done     bool // false until the first run finished
	err      error
	duration time.Duration
	at       time.Time
}

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

func (s *Server) refreshLoop() {
	t := s.cfg.clock.NewTicker(s.cfg.interval)
	defer t.Stop()
	for {
		select {
		case <-s.life.Done():
			return
		case <-t.Chan():
			s.refresh(s.life, true)
		}
	}
}

// due reports whether the refresher runs c in the round at now: every round
// unless c has an interval of its own (Every); then when that much time has
// passed since its last run (within half a round, so that a 30s check on a 5s
// refresher runs every 30s, not 35s), and every round while it fails or has
// not passed yet, so that a recovery shows within one round.
func (s *Server) due(c *check, now time.Time) bool {
	if c.every <= 0 {
		return true
	}
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	return !last.done || last.err != nil || now.Sub(last.at)+s.cfg.interval/2 >= c.every
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

// Refresh runs every check now, concurrently, each bounded by the check
// timeout and by ctx, and returns when all have reported or timed out. A
// check still running from an earlier round is not started again. Tests call
// it instead of waiting for the interval; after Shutdown it does nothing.
// (The background refresher runs a check that has an interval of its own,
// Every, only when it is due.)
func (s *Server) Refresh(ctx context.Context) { s.refresh(ctx, false) }

// refresh runs the checks, all of them or, with dueOnly, those due now.
func (s *Server) refresh(ctx context.Context, dueOnly bool) {
	type run struct {
		c      *check
		done   chan error
		start  time.Time
		cancel context.CancelFunc
		ctx    context.Context
	}
	var runs []run
	s.mu.Lock()
	if s.state == stateClosed {
		s.mu.Unlock()
		return
	}
	now := s.cfg.clock.Now()
	for _, c := range s.cfg.checks {
		if dueOnly && !s.due(c, now) {
			continue
		}
		if !c.inflight.CompareAndSwap(false, true) {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, s.cfg.checkTimeout)
		stop := context.AfterFunc(s.life, cancel)
		r := run{c: c, done: make(chan error, 1), start: s.cfg.clock.Now(), ctx: cctx,
			cancel: func() { stop(); cancel() }}
		s.wg.Go(func() {
			err := runCheck(cctx, c.fn)
			// Not in flight any more before the round learns the result, so the
			// next round (which may start as soon as this one returns) runs it.
			c.inflight.Store(false)
			r.done <- err
		})
		runs = append(runs, r)
	}
	s.mu.Unlock()

	for _, r := range runs {
		var err error
		select {
		case err = <-r.done:
		case <-r.ctx.Done():
			// The check ignores its context: record the timeout, leave it to
			// finish on its own (Shutdown awaits it).
			err = fmt.Errorf("check %q did not return within %v: %w", r.c.name, s.cfg.checkTimeout, r.ctx.Err())
		}
		r.cancel()
		now := s.cfg.clock.Now()
		s.record(r.c, result{done: true, err: err, duration: now.Sub(r.start), at: now})
	}
}

// runCheck calls fn, turning a panic in it into a failed check rather than a
// crashed process.
func runCheck(ctx context.Context, fn CheckFunc) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("check panicked: %v", v)
		}
	}()
	return fn(ctx)
}

func (s *Server) record(c *check, r result) {
	c.mu.Lock()
	prev := c.last
	c.last = r
	c.mu.Unlock()
	if prev.done && (prev.err == nil) == (r.err == nil) {
		return
	}
	if r.err != nil {
		s.cfg.log.Warn("health check failing", "check", c.name, "required", c.required, "error", r.err)
	} else if prev.done {
		s.cfg.log.Info("health check passing", "check", c.name)
	}
}

// verdict is everything the three endpoints decide from.
type verdict struct {
	snap   Snapshot
	checks map[string][]CheckResult
	// lifecycle is the "lifecycle:state" check; wedged is set by it.
	lifecycle CheckResult
	wedged    bool
	// requiredOK: every required check has run and passes; requiredReason
	// says why not.
	requiredOK     bool
	requiredReason string
	// worst is the worst status among all checks, lifecycle included, and
	// reason the output of the check that set it.
	worst  string
	reason string
}

func (s *Server) evaluate() verdict {
	snap := s.src.Snapshot()
	now := s.cfg.clock.Now()
	v := verdict{snap: snap, requiredOK: true, worst: StatusPass,
		checks: make(map[string][]CheckResult, len(s.cfg.checks)+1)}

	lc := CheckResult{Status: StatusPass, ComponentType: "system", ObservedUnit: "s", Time: snap.Since}
	if !snap.Since.IsZero() {
		lc.ObservedValue = now.Sub(snap.Since).Seconds()
	}
	switch snap.State {
	case stateFailed:
		lc.Status, lc.Output = StatusFail, `state "failed": boot or run failed`
	case stateRunning, statePulling, stateDraining:
		// Working states: never wedged, however long they last.
		switch snap.State {
		case statePulling:
			lc.Status, lc.Output = StatusWarn, `state "pulling": a pull control op is in progress`
		case stateDraining:
			lc.Status, lc.Output = StatusWarn, `state "draining": out of rotation (readiness 503), still working`
		}
	default:
		in := now.Sub(snap.Since)
		if s.cfg.stuckAfter > 0 && snap.State != stateStopped && !snap.Since.IsZero() && in > s.cfg.stuckAfter {
			v.wedged = true
			lc.Status = StatusFail
			lc.Output = fmt.Sprintf("wedged: state %q unchanged for %v (limit %v)", snap.State, in.Round(time.Second), s.cfg.stuckAfter)
		} else {
			lc.Status, lc.Output = StatusWarn, fmt.Sprintf("state %q is not running", snap.State)
		}
	}
	if lc.Status == StatusPass && snap.ShuttingDown {
		lc.Status, lc.Output = StatusWarn, "shutting down"
	}
	if lc.Status == StatusPass && snap.Degraded {
		lc.Status, lc.Output = StatusWarn, "degraded: booted without Redis"
	}
	v.lifecycle = lc
	v.checks[LifecycleCheck] = []CheckResult{lc}
	v.worsen(lc.Status, lc.Output)

	for _, c := range s.cfg.checks {
		c.mu.Lock()
		r := c.last
		c.mu.Unlock()
		required := c.required || (c.redis && snap.RedisRequired)
		cr := CheckResult{ComponentType: c.componentType, ObservedUnit: "ms", Time: r.at,
			ObservedValue: float64(r.duration.Microseconds()) / 1000}
		switch {
		case !r.done:
			cr.Status, cr.Output = StatusWarn, "not checked yet"
			if required {
				v.requiredOK = false
				v.requiredReason = fmt.Sprintf("required check %q has not run yet", c.name)
			}
		case r.err != nil:
			cr.Status, cr.Output = StatusWarn, r.err.Error()
			if required {
				cr.Status = StatusFail
				v.requiredOK = false
				v.requiredReason = fmt.Sprintf("required check %q failing: %v", c.name, r.err)
			}
		default:
			cr.Status, cr.Output = StatusPass, c.passOutput
		}
		v.checks[c.name] = []CheckResult{cr}
		v.worsen(cr.Status, c.name+": "+cr.Output)
	}
	return v
}

func (v *verdict) worsen(status, reason string) {
	if rank(status) > rank(v.worst) {
		v.worst, v.reason = status, reason
	}
}

func rank(status string) int {
	switch status {
	case StatusFail:
		return 2
	case StatusWarn:
		return 1
	}
	return 0
}

// Alive returns nil when /livez answers 200, and otherwise an error saying
// why: the instance failed, or is wedged. It is what a watchdog asks (see
// the lifecycle's systemd notifications).
func (s *Server) Alive() error {
	if v := s.evaluate(); v.lifecycle.Status == StatusFail {
		return errors.New(v.lifecycle.Output)
	}
	return nil
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
	case v.snap.State != stateRunning:
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
