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
//	GET  /api/fleet[?service=S]  the fleet as JSON
//	POST /api/op                 send restart, pull, drain or undrain and stream its results (NDJSON)
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
//     page's config script), or through textContent in app.js; invisible
//     characters (escape sequences, bidi overrides) are shown as escapes.
//   - Content-Security-Policy allows scripts, styles, images and fetches
//     from the dashboard itself only, with no 'unsafe-inline'; frames are
//     refused.
//   - State-changing requests are POST only and pass
//     net/http.CrossOriginProtection (Sec-Fetch-Site, else Origin against
//     Host); /api/op also wants a JSON body, which no cross-site form can
//     send without a preflight.
//   - Config.Hosts pins the Host header: with a loopback listener, a page
//     on another site whose name resolves to 127.0.0.1 (DNS rebinding)
//     gets 421.
//   - With Config.Token every request needs it: the login form sets an
//     HttpOnly, SameSite=Strict session cookie (an HMAC of the token, not
//     the token), and scripts send "Authorization: Bearer <token>". Both
//     are compared in constant time. Without it: 401, and the login form
//     for a browser.
package dashboard
