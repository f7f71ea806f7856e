package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stargazer/lifecycle/cmd/sgctl/internal/dashboard"
	"github.com/stargazer/lifecycle/registry"
)

// envDashboardToken is the token a non-loopback dashboard requires.
const envDashboardToken = "SG_DASHBOARD_TOKEN"

// minTokenLen is the shortest SG_DASHBOARD_TOKEN accepted: the token is the
// only thing between the network and the fleet's restart button.
const minTokenLen = 16

var dashboardCommand = &command{
	name:    "dashboard",
	signs:   true,
	summary: "Serve the fleet in a browser: live states, boot waterfalls, actions",
	usage:   "dashboard [--listen ADDR] [--public-url URL] [--session-ttl D] [--read-only] [--ttl D]",
	help: `Serves a web dashboard of the fleet at http://ADDR/: every service's
instances with their state (coloured by the lifecycle diagram's groups),
phase, host, pid, version, uptime, heartbeat age, degraded flag, control mode
and error, updated live from the sg:events stream; per instance, its last
boot as a waterfall of phase durations, the state diagram with its current
state highlighted (needs Graphviz dot), and its registry entry; and the
actions of sgctl: pull, restart, drain and undrain of one instance (Drain on
a running instance, Undrain on a draining one: out of rotation and back,
still running), and a rolling restart of a service with a max-unavailable
limit, each confirmed first and followed as the op commands' --wait does,
until every instance is in the status the op leads to.

One dashboard process reads sg:events with one blocking XREAD at a time,
whatever the number of browsers. Ops are signed with SG_CONTROL_KEY, which
stays in the dashboard process; without it they are sent unsigned, and only
instances in insecure control mode accept them (the page says so).

It listens on loopback by default. A --listen address that is not loopback
needs SG_DASHBOARD_TOKEN (at least 16 bytes; exit 2 without it). With a
token set, every request must carry it: a browser logs in once (the login
form starts a session of --session-ttl, default 12h: an HttpOnly,
SameSite=Strict cookie that expires with it; Log out ends it on the
server), scripts send "Authorization: Bearer <token>". Every POST of a
browser carries the CSRF token of the page it came from (with or without
a token), so a request that did not come from one of its pages, such as a
plain curl -X POST, sends no op. The dashboard speaks plain HTTP: across a
network, put it behind a TLS proxy and give its URL as --public-url
(https makes the session cookie Secure; a public URL whose host is not
loopback needs SG_DASHBOARD_TOKEN too). Ctrl-C stops it.`,
	flags: func(fs *flag.FlagSet, a *app) func(context.Context, []string) int {
		listen := fs.String("listen", "127.0.0.1:8080", "serve on `ADDR` (host:port; port 0 picks a free one)")
		readOnly := fs.Bool("read-only", false, "show the fleet without the actions")
		ttl := fs.Duration("ttl", registry.DefaultTTL, "the services' registry `TTL`, to date the last heartbeat (SG_SERVICE_TTL when set)")
		public := fs.String("public-url", "", "the `URL` operators open, e.g. the TLS proxy's https://dashboard.example.com (https: the session cookie is Secure)")
		session := fs.Duration("session-ttl", dashboard.DefaultSessionTTL, "how long a login lasts (`D`), with SG_DASHBOARD_TOKEN")
		return func(ctx context.Context, args []string) int {
			set := false
			fs.Visit(func(f *flag.Flag) { set = set || f.Name == "ttl" })
			return a.dashboard(ctx, args, dashboardFlags{listen: *listen, public: *public, session: *session, readOnly: *readOnly, ttl: *ttl, ttlSet: set})
		}
	},
}

// loopback reports whether host (from --listen) is a loopback address or
// the name localhost. "" (every interface) is not.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// dashboardFlags are sgctl dashboard's flags.
type dashboardFlags struct {
	listen, public string
	session, ttl   time.Duration
	readOnly       bool
	ttlSet         bool // --ttl was given: SG_SERVICE_TTL does not apply
}

func (a *app) dashboard(ctx context.Context, args []string, f dashboardFlags) int {
	listen, readOnly, ttl := f.listen, f.readOnly, f.ttl
	if len(args) > 0 {
		return a.usageError("unexpected arguments %q", args)
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return a.usageError("invalid value %q for flag --listen: want host:port, e.g. 127.0.0.1:8080", listen)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return a.usageError("invalid value %q for flag --listen: port %q is not a number from 0 to 65535", listen, port)
	}
	token := a.getenv(envDashboardToken)
	if !loopback(host) && token == "" {
		return a.usageError("--listen %s is not a loopback address: set %s (at least %d bytes) so that every request must carry it, or listen on 127.0.0.1",
			listen, envDashboardToken, minTokenLen)
	}
	if token != "" && len(token) < minTokenLen {
		return a.usageError("%s is %d bytes long: want at least %d", envDashboardToken, len(token), minTokenLen)
	}
	public, err := dashboard.ParsePublicURL(f.public)
	if err != nil {
		return a.usageError("invalid value for flag --public-url: %v", err)
	}
	if public != nil && !loopback(public.Hostname()) && token == "" {
		return a.usageError("--public-url %s is reached across a network: set %s (at least %d bytes) so that every request must carry it",
			public.Redacted(), envDashboardToken, minTokenLen)
	}
	if f.session <= 0 {
		return a.usageError("invalid value %q for flag --session-ttl: want a duration > 0 such as 12h", f.session)
	}
	if !f.ttlSet {
		if v := a.getenv("SG_SERVICE_TTL"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return a.usageError("invalid SG_SERVICE_TTL=%q: want a duration > 0 such as 30s", v)
			}
			ttl = d
		}
	}
	if ttl <= 0 {
		return a.usageError("invalid value %q for flag --ttl: want a duration > 0", ttl)
	}

	cn, code := a.connect(ctx)
	if cn == nil {
		return code
	}
	defer cn.Close()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintf(a.stderr, "sgctl dashboard: cannot listen on %s: %v\n", listen, err)
		return exitFailed
	}
	addr := ln.Addr().(*net.TCPAddr)
	var hosts []string
	if loopback(host) {
		// Only the loopback names of this very port: a page of another site
		// whose name resolves to 127.0.0.1 (DNS rebinding) is refused.
		p := strconv.Itoa(addr.Port)
		hosts = []string{net.JoinHostPort(addr.IP.String(), p), "localhost:" + p, "127.0.0.1:" + p, "[::1]:" + p}
		if public != nil {
			// A proxy on this host that passes the public Host header on.
			hosts = append(hosts, strings.ToLower(public.Host))
		}
	}
	log := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv, err := dashboard.New(dashboard.Config{
		Redis: cn.client, ControlKey: cn.controlKey, Token: token, Hosts: hosts,
		PublicURL: f.public, SessionTTL: f.session, ReadOnly: readOnly, TTL: ttl, Logger: log, Now: a.now,
	})
	if err != nil {
		ln.Close()
		fmt.Fprintf(a.stderr, "sgctl dashboard: %v\n", err)
		return exitFailed
	}

	url := "http://" + net.JoinHostPort(host, strconv.Itoa(addr.Port)) + "/"
	if host == "" {
		url = "http://<this host>:" + strconv.Itoa(addr.Port) + "/"
	}
	mode := "ops signed with SG_CONTROL_KEY"
	switch {
	case readOnly:
		mode = "read-only"
	case len(cn.controlKey) == 0:
		mode = "SG_CONTROL_KEY unset: ops are sent unsigned, only insecure instances accept them"
	}
	auth := "no token (loopback only)"
	if token != "" {
		auth = "every request needs " + envDashboardToken
	}
	// The listener is bound: what connects before Serve accepts waits in
	// the kernel's queue.
	fmt.Fprintf(a.stdout, "sgctl dashboard: serving %s (Redis at %s; %s; %s). Ctrl-C stops it.\n", url, cn.addr, mode, auth)

	// Ctrl-C ends the events reader, and with it the live streams, and the
	// server together.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Run(runCtx) }()
	err = srv.Serve(runCtx, ln)
	stopRun()
	wg.Wait()
	if err != nil {
		fmt.Fprintf(a.stderr, "sgctl dashboard: serving: %v\n", err)
		return exitFailed
	}
	return exitOK
}
