// Package dashboard checks `sgctl dashboard` in a real headless Chromium,
// driven by chromedp, against real cmd/demo processes and a real
// redis-server: the fleet page lists the instances, a transition appears
// without a reload within a second, a restart clicked and confirmed in the
// page takes an instance out of running and back with a new uptime, a drain
// and an undrain clicked there take one out of rotation and back (each
// button shown only in the status its op runs from), the rolling restart
// form restarts the three one at a time (the page never shows two out of
// running) and shows each back, the instance page's
// waterfall shows the phase delays set with DEMO_PHASE_DELAY, hostile
// registry values render as text, and the browser logs no error (CSP
// violations included). And the security review's forged row: an entry
// under sg:registry:service:{evil}:decoy-2 whose JSON says service "demo",
// instance "" is not on any page; a POST without the page's CSRF token
// gets 403, and with it POSTs for one instance with an empty, "*" or
// missing instance get 400, all writing nothing to the control streams; the rolling restart's confirmation says "all 2 instances"; a
// bidi override shows as \u202e in a cell and in the instance page's
// entry, rendered and live. With SG_DASHBOARD_TOKEN, the login form
// starts a session (an HttpOnly, SameSite=Strict cookie that expires with
// it) and the Log out button ends it: a copy of the cookie is then 401.
//
// It is a nested module so that chromedp stays out of the library's
// go.mod. Run it from this directory:
//
//	go test -count=1 ./...
//
// It needs chromium (apt-get install -y chromium) and redis-server on
// PATH; without them it is skipped, unless CI=true: then it fails.
// DASHBOARD_SCREENSHOT=path writes a screenshot of the fleet page there
// (the README's docs/dashboard.png comes from that).
package dashboard
