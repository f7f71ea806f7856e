package dashboard

import (
	"context"
	"crypto/rand"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/cmd/sgctl/internal/visible"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/diagrams"
	"github.com/stargazer/lifecycle/internal/agefmt"
	"github.com/stargazer/lifecycle/internal/ratelog"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

//go:embed web
var webFS embed.FS

// Defaults of Config.
const (
	DefaultBlock   = time.Second
	DefaultTTL     = registry.DefaultTTL
	DefaultOpLimit = 5 * time.Minute
)

// Config is what a Server needs. Redis is required; the rest has defaults.
type Config struct {
	// Redis is the fleet's Redis: the registry, sg:events and the control
	// streams.
	Redis redis.UniversalClient
	// ControlKey signs the ops the dashboard sends (the first key of
	// SG_CONTROL_KEY). Empty: ops are sent unsigned, which only instances in
	// insecure mode accept; the pages say so.
	ControlKey []byte
	// Token, when not empty, is required on every request (SG_DASHBOARD_TOKEN):
	// a session cookie set by the login form, or "Authorization: Bearer".
	Token string
	// SessionTTL is how long a login lasts: the session is refused after
	// it, and its cookie expires then (default DefaultSessionTTL, 12h).
	SessionTTL time.Duration
	// PublicURL is where operators open the dashboard, e.g. the https URL
	// of the TLS proxy in front of it (http or https, no path). https makes
	// the session cookie Secure, though the proxy's requests are plain
	// HTTP; its origin is trusted for POSTs. Empty: the cookie is Secure
	// only on a request that came over TLS.
	PublicURL string
	// Hosts, when not empty, are the only Host header values accepted (for
	// a loopback listener: its address under the loopback names). It stops
	// DNS rebinding: a page on another site whose name resolves to
	// 127.0.0.1 would otherwise be same-origin with the dashboard.
	Hosts []string
	// ReadOnly hides the actions and refuses POST /api/op.
	ReadOnly bool
	// TTL is the services' registry TTL (SG_SERVICE_TTL), to date
	// heartbeats from the index scores, as sgctl ps does. Default 30s.
	TTL time.Duration
	// Block is how long one XREAD of the events stream blocks (default 1s).
	// Run ends a blocked read at once when its context ends.
	Block time.Duration
	// OpLimit bounds how long POST /api/op follows an op (default 5m).
	OpLimit time.Duration
	// Limits bound Serve's connections: timeouts, live streams,
	// connections, request bodies. Zero fields take the defaults.
	Limits Limits
	// Logger gets the server's warnings (default slog.Default()).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server is the dashboard: an http.Handler and the one reader of the
// events stream that feeds every browser (Run).
type Server struct {
	cfg      Config
	reg      *registry.Registry
	client   *controlops.Client
	table    *phases.Table
	groups   map[string]string // state -> group
	tmpl     *template.Template
	static   http.Handler
	hub      *hub
	sessions *sessions // the logins, when Token is set
	csrf     string    // the CSRF token made at start: the pages' without Token, the login form's with it
	// httpsPublic: PublicURL is https, so the session cookie is Secure.
	httpsPublic bool
	mux         *http.ServeMux
	perms       permissions // may the Redis user send ops, per service
	rollouts    rollouts    // the rolling restarts under way (rollout.go)

	svgMu sync.Mutex
	svg   map[phases.State][]byte

	// skips rate-limits the warnings about events skipped for their names.
	skips *ratelog.Logger

	// streams counts the live streams open (GET /events), refusals
	// rate-limits the warnings about those refused past the cap.
	streams  atomic.Int64
	refusals *ratelog.Logger

	// The events reader's backoff (Run) waits on clock with jitter from
	// rand: the real ones when nil. Tests set them before Run.
	clock clockwork.Clock
	rand  func() float64
}

// lifecycleTable is the table the dashboard draws and colours by: the one
// every service runs.
func lifecycleTable() *phases.Table { return phases.Lifecycle() }

// New returns a Server for cfg. Call Run to start the events reader; the
// handler serves pages without it, but live updates need it.
func New(cfg Config) (*Server, error) { return newServer(cfg, lifecycleTable()) }

// newServer is New with the table the pages draw and colour by.
func newServer(cfg Config, table *phases.Table) (*Server, error) {
	if cfg.Redis == nil {
		return nil, fmt.Errorf("dashboard: Config.Redis is nil")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Block <= 0 {
		cfg.Block = DefaultBlock
	}
	if cfg.OpLimit <= 0 {
		cfg.OpLimit = DefaultOpLimit
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	public, err := ParsePublicURL(cfg.PublicURL)
	if err != nil {
		return nil, fmt.Errorf("dashboard: Config.PublicURL: %w", err)
	}
	cfg.Limits = cfg.Limits.withDefaults(nofile())
	s := &Server{
		cfg:    cfg,
		reg:    registry.New(cfg.Redis, registry.WithTTL(cfg.TTL), registry.WithLogger(cfg.Logger)),
		client: controlops.NewClient(cfg.Redis, cfg.ControlKey),
		table:  table,
		groups: map[string]string{},
		svg:    map[phases.State][]byte{},
		skips:  ratelog.New(cfg.Logger, nil, ratelog.DefaultInterval),

		refusals: ratelog.New(cfg.Logger, nil, ratelog.DefaultInterval),
	}
	for _, st := range s.table.States {
		s.groups[string(st.Name)] = string(st.Group)
	}
	s.sessions = newSessions(cfg.SessionTTL, cfg.Now)
	s.csrf = rand.Text()
	s.httpsPublic = public != nil && public.Scheme == "https"
	tmpl, err := template.New("").Funcs(template.FuncMap{
		"clean": visible.Clean,
		"cell":  visible.Cell,
		"age":   agefmt.Format,
		"group": s.group,
		"ms":    unixMS,
		"since": func(t time.Time) string {
			if t.IsZero() {
				return ""
			}
			return agefmt.Format(cfg.Now().Sub(t))
		},
	}).ParseFS(webFS, "web/*.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard: templates: %w", err)
	}
	s.tmpl = tmpl
	static, _ := fs.Sub(webFS, "web/static")
	s.static = http.StripPrefix("/static/", http.FileServerFS(static))
	s.hub = newHub(s)
	if err := s.routes(public); err != nil {
		return nil, err
	}
	return s, nil
}

// Run reads the events stream with blocking XREADs, one at a time, through
// a connection of its own (registry.EventReader), and fans every transition
// out to the connected browsers, until ctx ends. An entry larger than an
// event can be (registry.MaxEventLen), which anyone who can write to Redis
// can append, is never loaded: it is left out, with a warning at most once a
// minute. It returns once ctx's end has closed that connection (which ends a
// blocked read at once) and every live stream has been ended. When Redis fails it retries with the
// project's backoff (exponential, full jitter, 100ms to 5s) from where it
// was, logging one warning when the failures begin (then at most one a
// minute) and one info line when the stream answers again.
func (s *Server) Run(ctx context.Context) error { return s.hub.run(ctx) }

// ServeHTTP serves the dashboard.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Routes. Every one goes through s.guard: headers, Host check, token,
// CSRF token. POSTs go through net/http's CrossOriginProtection too, which
// trusts the public URL's origin (a proxy may pass its own Host).
func (s *Server) routes(public *url.URL) error {
	mux := http.NewServeMux()
	csrf := http.NewCrossOriginProtection()
	if public != nil {
		if err := csrf.AddTrustedOrigin(public.Scheme + "://" + public.Host); err != nil {
			return fmt.Errorf("dashboard: Config.PublicURL %q: %w", s.cfg.PublicURL, err)
		}
	}
	get := func(pattern string, h http.HandlerFunc) { mux.Handle("GET "+pattern, s.guard(h, true)) }
	post := func(pattern string, h http.HandlerFunc, auth bool) {
		mux.Handle("POST "+pattern, s.guard(csrf.Handler(h), auth))
	}
	get("/{$}", s.fleetPage)
	get("/service", s.servicePage)
	get("/instance", s.instancePage)
	get("/instance/waterfall", s.waterfallFragment)
	get("/diagram.svg", s.diagramSVG)
	get("/events", s.live(s.stream(s.hub.serve)))
	get("/api/fleet", s.fleetJSON)
	get("/static/", s.static.ServeHTTP)
	post("/api/op", s.stream(s.postOp), true)
	mux.Handle("GET /login", s.guard(http.HandlerFunc(s.loginPage), false))
	post("/login", s.login, false)
	post("/logout", s.logout, false)
	s.mux = mux
	return nil
}

// csp allows only the dashboard's own script, stylesheet and images: no
// inline script or style anywhere, so a value from Redis that escaped its
// context still could not run.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// guard sets the security headers, refuses unexpected Host headers,
// bounds the body at MaxBody and, when auth is set, refuses requests
// without the token (when one is configured: 401) and POSTs without the
// CSRF token of the caller's pages (403).
func (s *Server) guard(h http.Handler, auth bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		if len(s.cfg.Hosts) > 0 && !slices.Contains(s.cfg.Hosts, strings.ToLower(r.Host)) {
			http.Error(w, fmt.Sprintf("dashboard: unexpected Host %q: open the dashboard at http://%s/", r.Host, s.cfg.Hosts[0]), http.StatusMisdirectedRequest)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
		if auth {
			c, ok := s.identify(r)
			if !ok {
				s.unauthorized(w, r)
				return
			}
			if r.Method == http.MethodPost && !c.sentCSRF(r, false) {
				noCSRF(w)
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), callerKey{}, c))
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) group(status string) string {
	if g, ok := s.groups[status]; ok {
		return g
	}
	return "unknown"
}

// render executes the template name into w, or answers 500.
func (s *Server) render(w http.ResponseWriter, status int, name string, data any) {
	var b strings.Builder
	if err := s.tmpl.ExecuteTemplate(&b, name, data); err != nil {
		s.cfg.Logger.Error("dashboard: rendering a page", "template", name, "error", err)
		http.Error(w, "dashboard: rendering the page failed; see the dashboard's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// diagramSVG serves the lifecycle diagram with ?state= highlighted. The
// state is checked against the table, so the picture holds nothing from
// Redis, and the renderings are cached per state (dot runs once per state).
func (s *Server) diagramSVG(w http.ResponseWriter, r *http.Request) {
	state := phases.State(r.URL.Query().Get("state"))
	if _, ok := s.table.State(state); !ok {
		state = ""
	}
	s.svgMu.Lock()
	body, ok := s.svg[state]
	s.svgMu.Unlock()
	if !ok {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		var err error
		body, err = diagrams.SVG(ctx, diagrams.DOT(s.table, diagrams.Highlight(state)))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotImplemented)
			return
		}
		s.svgMu.Lock()
		s.svg[state] = body
		s.svgMu.Unlock()
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "private, max-age=3600")
	_, _ = w.Write(body)
}
