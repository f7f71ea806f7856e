package dashboard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/net/netutil"
)

// Defaults of Limits. Each is far from anything a user of the pages meets,
// and bounds how long a connection that does not finish its request holds
// a descriptor.
const (
	// DefaultReadHeaderTimeout: a browser sends its request headers in one
	// packet.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout bounds a whole request, body included; the largest
	// body the dashboard takes is MaxBody (a login form, an op).
	DefaultReadTimeout = 15 * time.Second
	// DefaultWriteTimeout bounds a response from the end of its request
	// headers: pages, /api/fleet and the diagram (dot runs at most 10s)
	// take well under a second on a fleet of 1,000 instances. The live
	// stream and an op's progress have their own deadlines instead.
	DefaultWriteTimeout = 60 * time.Second
	// DefaultIdleTimeout closes a kept-alive connection after that long
	// without a request: an open page asks for /api/fleet every 5s, and a
	// browser opens a new connection when it needs one.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultStreamWriteTimeout bounds each write of the live stream and of
	// an op's progress: a browser that reads nothing for that long is
	// disconnected (a page's stream reconnects and resumes).
	DefaultStreamWriteTimeout = 20 * time.Second
	// DefaultKeepAlive is how often an idle live stream gets a comment
	// line, so that proxies keep it open and a vanished browser is noticed
	// (its write fails after DefaultStreamWriteTimeout).
	DefaultKeepAlive = 15 * time.Second
	// DefaultMaxSubscribers caps the live streams (one per open page): a
	// browser speaking HTTP/1.1 keeps at most six connections to a host, so
	// a team's browsers stay far below it.
	DefaultMaxSubscribers = 64
	// DefaultMaxConns caps the connections Serve holds at once, and at most
	// half the process's descriptor limit (RLIMIT_NOFILE), so that Redis
	// connections, dot and the log keep descriptors whatever browsers or
	// attackers hold.
	DefaultMaxConns = 512
)

// MaxBody is the largest request body the dashboard reads (a login form,
// an op); a longer one is answered 413.
const MaxBody = 4 << 10

// maxHeaderBytes bounds a request's headers (net/http's default is 1 MB).
const maxHeaderBytes = 64 << 10

// Limits bound what the dashboard's connections may hold (Config.Limits).
// A zero field takes its default.
type Limits struct {
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout are
	// net/http.Server's. The live stream (GET /events) and an op's
	// progress (POST /api/op) are exempt from WriteTimeout.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// StreamWriteTimeout is the deadline of each write and flush of the
	// live stream and of an op's progress.
	StreamWriteTimeout time.Duration
	// KeepAlive is how often an idle live stream gets a comment line.
	KeepAlive time.Duration
	// MaxSubscribers caps the live streams open at once; GET /events past
	// it is answered 503 with Retry-After. Default DefaultMaxSubscribers,
	// at most half of MaxConns.
	MaxSubscribers int
	// MaxConns caps the connections Serve holds at once; past it, new
	// connections wait in the kernel's accept queue until one closes.
	// Default DefaultMaxConns, at most half the descriptor limit.
	MaxConns int
}

// withDefaults fills l's zero fields. nofile is the process's descriptor
// limit, 0 when unknown.
func (l Limits) withDefaults(nofile uint64) Limits {
	set := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	set(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	set(&l.ReadTimeout, DefaultReadTimeout)
	set(&l.WriteTimeout, DefaultWriteTimeout)
	set(&l.IdleTimeout, DefaultIdleTimeout)
	set(&l.StreamWriteTimeout, DefaultStreamWriteTimeout)
	set(&l.KeepAlive, DefaultKeepAlive)
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
		if nofile > 0 && nofile/2 < uint64(l.MaxConns) {
			l.MaxConns = max(8, int(nofile/2))
		}
	}
	if l.MaxSubscribers <= 0 {
		l.MaxSubscribers = max(1, min(DefaultMaxSubscribers, l.MaxConns/2))
	}
	return l
}

// shutdownGrace is how long Serve, once its context ends, waits for the
// requests in flight before it closes their connections.
const shutdownGrace = 5 * time.Second

// Serve serves the dashboard on ln until ctx ends or serving fails, with
// Config.Limits: the server's timeouts, and at most MaxConns connections
// at once (netutil.LimitListener; the others wait in the kernel's accept
// queue, holding no descriptor of the process). When ctx ends it stops
// accepting, closes idle connections, waits up to 5s for the requests in
// flight (the live streams end when Run returns: cancel both with the same
// context) and closes what is left; it then returns nil. A failure to
// accept is returned. ln is closed either way.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	lim := s.cfg.Limits
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
	}
	s.cfg.Logger.Info("dashboard: limits", "max_conns", lim.MaxConns, "max_subscribers", lim.MaxSubscribers,
		"read_header_timeout", lim.ReadHeaderTimeout, "read_timeout", lim.ReadTimeout, "write_timeout", lim.WriteTimeout,
		"idle_timeout", lim.IdleTimeout, "stream_write_timeout", lim.StreamWriteTimeout, "keep_alive", lim.KeepAlive)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(netutil.LimitListener(ln, lim.MaxConns)) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		_ = hs.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// stream exempts a long response, the live stream or an op's progress,
// from the server's write timeout: each write and flush gets a deadline of
// its own, StreamWriteTimeout from when it starts. (The read timeout ends
// with the request's body: net/http lifts the read deadline once the body
// is read, so a closed connection is still noticed.)
func (s *Server) stream(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h(&streamWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: s.cfg.Limits.StreamWriteTimeout}, r)
	}
}

// retryAfter is the Retry-After, in seconds, of a live stream refused at
// the cap; the pages try again after it.
const retryAfter = 10

// live caps the live streams at Limits.MaxSubscribers: one past it is
// answered 503 with Retry-After, and logged (a warning at most once a
// minute, counting the others).
func (s *Server) live(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		limit := s.cfg.Limits.MaxSubscribers
		if s.streams.Add(1) > int64(limit) {
			s.streams.Add(-1)
			s.refusals.Log(r.Context(), slog.LevelWarn, "dashboard: live streams at the cap: refusing one with 503",
				"max_subscribers", limit, "remote", r.RemoteAddr)
			w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
			http.Error(w, fmt.Sprintf("dashboard: %d live streams are open, the most this dashboard serves: try again in %ds", limit, retryAfter),
				http.StatusServiceUnavailable)
			return
		}
		defer s.streams.Add(-1)
		h(w, r)
	}
}

// streamWriter sets a write deadline before each write and flush.
type streamWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (w *streamWriter) Write(p []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.ResponseWriter.Write(p)
}

// FlushError is what http.ResponseController.Flush calls.
func (w *streamWriter) FlushError() error {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (w *streamWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// bodyError answers a request whose body could not be read: 413 past
// MaxBody, else 400.
func bodyError(w http.ResponseWriter, err error) {
	if mb, ok := errors.AsType[*http.MaxBytesError](err); ok {
		http.Error(w, fmt.Sprintf("dashboard: request body over %d bytes", mb.Limit), http.StatusRequestEntityTooLarge)
		return
	}
	http.Error(w, "dashboard: reading the request body: "+err.Error(), http.StatusBadRequest)
}
