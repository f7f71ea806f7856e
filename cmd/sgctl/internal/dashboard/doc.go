// Package dashboard is the web dashboard of sgctl (`sgctl dashboard`): the
// fleet in a browser, live, with each instance's last boot as a waterfall,
// the lifecycle diagram with its current state lit, and the restart, pull,
// drain and undrain actions of sgctl.
//
// # Pages and endpoints
//
//	GET  /                       every service: counts per state, one row per live instance
//	GET  /service?name=S         one service, with the rolling restart form
//	GET  /instance?service=S&id=I  last boot waterfall, state diagram, registry entry
//	GET  /instance/waterfall?... the waterfall alone (app.js swaps it in)
//	GET  /diagram.svg?state=X    the lifecycle diagram, X highlighted (Graphviz dot)
//	GET  /events                 server-sent events: one "transition" per sg:events entry
//	GET  /api/fleet[?service=S]  the fleet as JSON (each value cut at 128 characters, as the cells)
//	POST /api/op                 send restart, pull, drain or undrain to one instance, or a
//	                             rolling restart to a service, and stream its results (NDJSON)
//	GET  /login, POST /login, POST /logout
//
// Pages are html/template output with one embedded stylesheet and one
// vanilla script (web/static); nothing is loaded from elsewhere.
//
// # Live updates: one reader per process
//
// Run is the only reader of sg:events in a dashboard process: one blocking
// XREAD at a time (Config.Block, default 1s), starting at the stream's end.
// Each transition read is sent, with the instance's entry read just after
// it (one pipelined GET and ZSCORE per batch), to every connected browser
// through a buffered channel; a browser that falls 512 messages behind
// is disconnected rather than slowing the others, and resumes when it
// reconnects. The last 2048 transitions stay in memory: a browser resumes
// from the id it last saw (the Last-Event-ID header EventSource sends on
// reconnect, or ?after=, the stream id a page was rendered at) without a
// Redis read; an older id is read from the stream once (XRANGE), and when
// more than 2048 were missed the page is told to reload ("reset").
// A hundred browsers cost one XREAD, not a hundred. When Redis fails, Run
// retries from the last id it read with the project's backoff (exponential
// with full jitter, 100ms to 5s; package internal/retry): one warning when
// the failures begin, at most one a minute while they last, one info line
// when the stream answers again. The browsers stay connected meanwhile.
//
// # Actions
//
// A row's buttons (restart, pull, drain, undrain) act on that one instance:
// the request names the page's service (the one in its URL, or the
// section's on the fleet page) and the row's instance, whose name is its
// registry key's; POST /api/op refuses, with a 400 naming the field, a
// service or instance that is missing or not a name, and never reads an
// empty instance as every instance. The one action on a whole service is
// the service's rolling restart form ("rolling": true), whose confirmation
// says how many instances it restarts ("Restart all N instances of S", N
// from the listing on the page). The dashboard runs that rollout itself,
// with sgctl's package (cmd/sgctl/internal/rollout): each instance gets a
// signed restart op of its own, and the next goes out only once an
// instance is back (a done signed with the dashboard's key, and the
// registry showing it running in a new process), at most max_unavailable
// in flight; nothing written to Redis lifts that limit. One rollout per
// service at a time in a dashboard process (another form meanwhile gets
// 409); its progress streams to the page as an op's does, plus a "sent"
// line per instance and a "back" line when one is back. It lasts as long
// as the request: closing the page stops it before the next op, as Ctrl-C
// stops sgctl, and each instance has OpLimit to come back.
//
// POST /api/op sends the op with the controlops client, signed with
// Config.ControlKey (SG_CONTROL_KEY) when set: the key stays in the
// dashboard process and never reaches a browser. Without a key ops are
// sent unsigned, which only instances in insecure control mode accept: the
// pages say so and enable the buttons only where the instance's control
// mode accepts what the dashboard can send. An op is offered where the
// instance's status accepts it (package optrack, from the lifecycle table):
// pull and drain on running instances, undrain on draining ones (the Drain
// and Undrain buttons show only there), restart on both. The response
// follows the op as sgctl's op commands do with --wait, through the same
// optrack.Tracker: each instance's results as they arrive, its status
// changes, and its arrival in a status of the role the op leads to, read
// from the lifecycle table (restart, pull, undrain: serving, i.e. running,
// a restart in a new process; drain: draining).
//
// # Redis users
//
// The dashboard needs the sg-reader role of docs/redis-acl.md to show the
// fleet, and the sg-operator role for its actions. It finds out by itself
// which it has, without sending an op and without admin rights (ACL DRYRUN
// and ACL WHOAMI would need them): the first page that lists a service asks
// controlops.Client.CheckPermission (an XADD to sg:control:{<name>} that
// Redis refuses whatever the user, id 0-0, NOMKSTREAM, after checking the
// user's permissions: it writes nothing; and a non-blocking XREAD of the
// results), and keeps the answer PermissionTTL (a minute). A user that may
// not send gets, on every page of the service, "Actions are off: this Redis
// user cannot send control ops (XADD to sg:control:{demo} refused): use the
// sg-operator role: NOPERM ...: the sg-operator role needs +xadd
// (docs/redis-acl.md)", a disabled rolling restart, and buttons that app.js
// disables with that reason as their title (pageConfig.Denied); POST
// /api/op answers 403 with it without sending. A send Redis refuses all
// the same (the user lost its rules meanwhile) is recorded at once. Such a
// user's probes show in Redis's ACL LOG as refused xadds (one line, counted).
// With --read-only nothing is checked.
//
// # Security
//
//   - Everything read from Redis reaches a page through html/template, in
//     the context it lands in (text, attribute, URL query, JSON in the
//     page's config script), or through textContent in app.js. HTML
//     escaping does not neutralise what a reader cannot see, so every rune
//     outside Unicode's graphic categories (escape sequences, C1 controls,
//     bidi overrides such as U+202E, zero-width characters) is shown as a
//     Go escape (\u202e), by sgctl's rule (package visible; app.js applies
//     it to live values), and in the instance page's JSON as a \u escape.
//   - Names come from keys (package registry): an entry whose JSON names
//     another service or instance than its key, or none, is not listed,
//     and no row, count or action comes from it; a transition whose service
//     or instance cannot be a name is not shown.
//   - Cells hold at most 128 characters of a value, "…" after a longer one,
//     as sgctl ps: the fleet pages, /api/fleet and the live updates carry
//     no more (a transition's error, 512), so a 15 MB registry value costs
//     a page 128 characters; the instance page shows the whole entry,
//     escaped.
//   - Content-Security-Policy allows scripts, styles, images and fetches
//     from the dashboard itself only, with no 'unsafe-inline'; frames are
//     refused.
//   - State-changing requests are POST only and pass
//     net/http.CrossOriginProtection (Sec-Fetch-Site, else Origin against
//     Host; Config.PublicURL's origin is trusted); /api/op also wants a
//     JSON body, which no cross-site form can send without a preflight.
//   - Every POST needs a CSRF token (403 without it, nothing sent), unless
//     it carries "Authorization: Bearer <token>". Without Config.Token the
//     token is made at start (crypto/rand) and is in every page's config;
//     with it, each session has its own, in its pages' config. app.js sends
//     it as X-CSRF-Token (on /api/op and Log out); the login form, as a
//     hidden csrf field, the token made at start. So a request that did not
//     come from a page of this dashboard process, such as a plain local
//     curl -X POST or a form on another site, sends no op. It is not a
//     secret from a local user who can read the pages: on a shared host,
//     set a token.
//   - Config.Hosts pins the Host header: with a loopback listener, a page
//     on another site whose name resolves to 127.0.0.1 (DNS rebinding)
//     gets 421.
//   - With Config.Token every request needs it: scripts send
//     "Authorization: Bearer <token>" (compared in constant time), and a
//     browser logs in once with the login form, which starts a session.
//     Without either: 401, and the login form for a browser.
//
// # Sessions
//
// A session lives in the dashboard's memory: a random 256-bit id, which is
// the cookie's value (never the token nor derived from it), its CSRF token
// and its expiry, Config.SessionTTL after the login (default 12h, sgctl
// dashboard --session-ttl) on Config.Now. The cookie sg_dashboard is
// HttpOnly, SameSite=Strict, Path=/, with Max-Age and Expires of the
// session, and Secure when Config.PublicURL (--public-url) is https, as
// behind a TLS proxy whose requests to the dashboard are plain HTTP, or
// when the request itself came over TLS. An expired session is refused
// (401) and forgotten. POST /logout (the Log out button) ends the session
// on the server: the cookie's value is refused from then on, wherever a
// copy of it is, and the browser is told to drop it. At most 1024 sessions
// are kept (a login past that ends the one that would expire first); a
// restart of the dashboard ends them all.
//
// # Connections
//
// Serve bounds what a connection may hold (Config.Limits, defaults in
// brackets): request headers must arrive within ReadHeaderTimeout [10s] and
// the whole request, body included, within ReadTimeout [15s]; a response
// must be written within WriteTimeout [60s]; a kept-alive connection with
// no request is closed after IdleTimeout [30s]. The live stream (GET
// /events) and an op's progress (POST /api/op) outlive WriteTimeout: each
// of their writes has its own deadline, StreamWriteTimeout [20s], and an
// idle live stream gets a comment line every KeepAlive [15s], so a proxy
// keeps it open and a vanished browser is noticed. At most MaxSubscribers
// [64] live streams are open at once: past it GET /events is answered 503
// with Retry-After, and a warning is logged (at most once a minute). At
// most MaxConns [512, and at most half the descriptor limit] connections
// are held; later ones wait in the kernel's accept queue, so slow or idle
// clients cannot take every descriptor from an authorised request. Request
// bodies are at most MaxBody (4 KiB; 413 past it), headers 64 KiB.
package dashboard
