package dashboard

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/tabletest"
	"github.com/stargazer/lifecycle/registry"
)

func TestFleetPageListsEachInstanceColouredByItsStateGroup(t *testing.T) {
	r, _ := miniRig(t, nil)
	put(t, r.rdb, entry("demo", "demo-1", "running"))
	put(t, r.rdb, entry("demo", "demo-2", "loading_modules"))
	e := entry("demo", "demo-3", "cleaning_up")
	e.Error, e.Control, e.Degraded = "adapters: boom", "insecure", true
	put(t, r.rdb, e)
	res := r.get(t, "/")
	if res.code != http.StatusOK {
		t.Fatalf("GET / = %d: %s", res.code, res.body)
	}
	for _, want := range []string{
		`data-instance="demo-1" data-status="running"`,
		`<span class="st g-run s-running">running</span>`,
		`<span class="st g-boot s-loading_modules">loading_modules</span>`,
		`<span class="st g-shutdown s-cleaning_up">cleaning_up</span>`,
		`<td class="error">adapters: boom</td>`,
		`<td class="degraded">degraded</td>`,
		`<td class="control c-insecure">insecure</td>`,
		`<span class="chip g-run s-running">running <b>1</b></span>`,
		`1 of 3 instances accept unsigned control ops`,
		`<td class="host">h1</td>`, `<td class="pid">42</td>`, `<td class="version">v1</td>`, `<td class="uptime">1m0s</td>`,
	} {
		if !strings.Contains(res.body, want) {
			t.Errorf("the fleet page lacks %s", want)
		}
	}
	if one := r.get(t, "/service?name=demo"); one.code != 200 || !strings.Contains(one.body, `class="rolling" data-service="demo"`) {
		t.Errorf("GET /service?name=demo = %d without the rolling restart form", one.code)
	}
}

func TestAControlStateAddedToTheTableIsColouredByItsGroupAndCountedApart(t *testing.T) {
	// The lifecycle table grown by the recipe of docs/architecture.md.
	table := tabletest.Grown()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	s, err := newServer(Config{Redis: rdb, Logger: slog.New(slog.DiscardHandler)}, table)
	if err != nil {
		t.Fatal(err)
	}
	hs := serve(t, s)
	put(t, rdb, entry("demo", "demo-1", "running"))
	put(t, rdb, entry("demo", "demo-2", "pausing"))
	put(t, rdb, entry("demo", "demo-3", "warming_up"))
	res := (&rig{srv: s, http: hs, rdb: rdb}).get(t, "/")
	if res.code != http.StatusOK {
		t.Fatalf("GET / = %d: %s", res.code, res.body)
	}
	for _, want := range []string{
		`<span class="st g-control s-pausing">pausing</span>`,
		`<span class="chip g-control s-pausing">pausing <b>1</b></span>`,
		`<span class="chip g-run s-running">running <b>1</b></span>`,
		`<span class="st g-boot s-warming_up">warming_up</span>`,
		`"pausing":"control"`, // app.js colours live updates from the page's groups
	} {
		if !strings.Contains(res.body, want) {
			t.Errorf("the fleet page lacks %s", want)
		}
	}
}

func TestHostileValuesFromRedisRenderAsText(t *testing.T) {
	r, _ := miniRig(t, nil)
	const script = `<script>alert(1)</script>`
	const esc = "evil\x1b[31m\u202e"
	e := entry("demo", "demo-9", "running")
	e.Host, e.Version, e.Error, e.Phase = script, `"><img src=x onerror=alert(2)>`, "</pre><script>alert(3)</script>", esc
	put(t, r.rdb, e)
	// An entry under a hostile id: names come from keys, so it is not
	// listed; its own page names the id, escaped.
	put(t, r.rdb, entry("demo", esc, "running"))
	reg := registry.New(r.rdb)
	if _, err := reg.Publish(context.Background(), registry.Event{Service: "demo", Instance: "demo-1", Event: "fail", From: "running", To: `stopping_daemons`, Error: script}); err != nil {
		t.Fatal(err)
	}
	pages := map[string]string{
		"fleet":        "/",
		"instance":     "/instance?service=demo&id=demo-9",
		"hostile id's": "/instance?service=demo&id=" + url.QueryEscape(esc),
	}
	scripts := regexp.MustCompile(`(?i)<script\b[^>]*>`)
	for name, path := range pages {
		res := r.get(t, path)
		if res.code != http.StatusOK {
			t.Fatalf("%s: GET %s = %d: %s", name, path, res.code, res.body)
		}
		for _, tag := range scripts.FindAllString(res.body, -1) {
			if tag != `<script src="/static/app.js" defer>` && tag != `<script type="application/json" id="config">` {
				t.Errorf("%s: a script tag that is not the dashboard's: %s", name, tag)
			}
		}
		// The raw id stays in data- attributes and the page's config only,
		// for app.js: never in the text a reader sees.
		text := regexp.MustCompile(`data-[a-z]+="[^"]*"|(?s)<script type="application/json" id="config">.*?</script>`).ReplaceAllString(res.body, "")
		if strings.Contains(res.body, "<img src=x") || strings.Contains(text, "\x1b") || strings.Contains(text, "\u202e") {
			t.Errorf("%s: a raw value from Redis reached the page's text", name)
		}
		shown := `evil\x1b[31m\u202e`
		if name == "instance" { // in the entry's JSON, with JSON's escapes
			shown = `&#34;phase&#34;: &#34;evil\u001b[31m\u202e&#34;`
		}
		if !strings.Contains(res.body, shown) {
			t.Errorf("%s: the escape sequence is not shown as text (%s)", name, shown)
		}
	}
	fleet := r.get(t, "/")
	if !strings.Contains(fleet.body, `<td class="host">&lt;script&gt;alert(1)&lt;/script&gt;</td>`) {
		t.Errorf("the host field is not shown as text")
	}
	if strings.Contains(fleet.body, `id=evil`) || strings.Count(fleet.body, `<tr class="inst`) != 1 {
		t.Errorf("the fleet page lists the entry under a hostile id")
	}
	if page := r.get(t, pages["hostile id's"]).body; !strings.Contains(page, "not this instance&#39;s entry") {
		t.Errorf("the hostile id's page does not say why it has no entry")
	}
}

func TestEveryResponseCarriesAContentSecurityPolicyWithoutUnsafeInline(t *testing.T) {
	r, _ := miniRig(t, nil)
	put(t, r.rdb, entry("demo", "demo-1", "running"))
	for _, path := range []string{"/", "/service?name=demo", "/instance?service=demo&id=demo-1", "/static/app.js", "/api/fleet", "/login"} {
		res := r.get(t, path)
		pol := res.hdr.Get("Content-Security-Policy")
		if res.code != 200 || !strings.Contains(pol, "script-src 'self'") || !strings.Contains(pol, "default-src 'none'") || strings.Contains(pol, "unsafe-inline") {
			t.Errorf("GET %s = %d, CSP %q", path, res.code, pol)
		}
		if res.hdr.Get("X-Content-Type-Options") != "nosniff" || res.hdr.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s lacks nosniff or X-Frame-Options", path)
		}
	}
	// No inline script or style in the pages: the policy would block them.
	page := r.get(t, "/instance?service=demo&id=demo-1").body + r.get(t, "/").body
	if regexp.MustCompile(`(?i)\sstyle=|\son[a-z]+=|<style`).MatchString(page) {
		t.Errorf("a page has an inline style or event handler")
	}
}

func TestWithATokenEveryRequestWithoutItGets401(t *testing.T) {
	const token = "a-token-of-at-least-16-bytes"
	r, _ := miniRig(t, func(c *Config) { c.Token = token })
	for _, path := range []string{"/", "/events", "/api/fleet", "/static/app.js", "/diagram.svg", "/instance?service=demo&id=x"} {
		if res := r.get(t, path); res.code != http.StatusUnauthorized {
			t.Errorf("GET %s without the token = %d, want 401", path, res.code)
		}
		if res := r.get(t, path, "Authorization", "Bearer wrong-token-wrong-token"); res.code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong token = %d, want 401", path, res.code)
		}
	}
	if res := r.post(t, "/api/op", "application/json", `{"service":"demo","op":"pull"}`); res.code != http.StatusUnauthorized {
		t.Errorf("POST /api/op without the token = %d, want 401", res.code)
	}
	// A browser asking for a page gets the login form with its 401.
	if res := r.get(t, "/", "Accept", "text/html"); res.code != 401 || !strings.Contains(res.body, `<form method="post" action="/login">`) {
		t.Errorf("GET / from a browser = %d without the login form", res.code)
	}
	if res := r.get(t, "/api/fleet", "Authorization", "Bearer "+token); res.code != http.StatusOK {
		t.Errorf("GET /api/fleet with the Bearer token = %d, want 200", res.code)
	}
	// The login form: a wrong token gets 401, the right one a cookie.
	if res := r.post(t, "/login", "application/x-www-form-urlencoded", "token=nope"); res.code != http.StatusUnauthorized {
		t.Errorf("POST /login with a wrong token = %d, want 401", res.code)
	}
	session := login(t, r, token)
	if !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || strings.Contains(session.Value, token) {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, and not the token itself", session)
	}
	if res := r.get(t, "/", "Cookie", cookieName+"="+session.Value); res.code != http.StatusOK {
		t.Errorf("GET / with the session cookie = %d, want 200", res.code)
	}
}

func TestCrossOriginPostsAreRefused(t *testing.T) {
	r, _ := miniRig(t, nil)
	put(t, r.rdb, entry("demo", "demo-1", "running"))
	body := `{"service":"demo","instance":"demo-1","op":"pull"}`
	for _, hdr := range [][]string{
		{"Origin", "http://evil.example"},
		{"Sec-Fetch-Site", "cross-site"},
		{"Sec-Fetch-Site", "same-site"},
	} {
		if res := r.post(t, "/api/op", "application/json", body, hdr...); res.code != http.StatusForbidden {
			t.Errorf("POST /api/op with %s: %s = %d, want 403", hdr[0], hdr[1], res.code)
		}
	}
	// A form post (no preflight) is refused for its content type.
	if res := r.post(t, "/api/op", "application/x-www-form-urlencoded", "op=pull&service=demo"); res.code != http.StatusUnsupportedMediaType {
		t.Errorf("POST /api/op as a form = %d, want 415", res.code)
	}
	if res := r.get(t, "/api/op"); res.code != http.StatusMethodNotAllowed {
		t.Errorf("GET /api/op = %d, want 405", res.code)
	}
}

func TestAnUnexpectedHostIsRefused(t *testing.T) {
	r, _ := miniRig(t, func(c *Config) { c.Hosts = []string{"127.0.0.1:8080", "localhost:8080"} })
	req, _ := http.NewRequest(http.MethodGet, r.http.URL+"/", nil)
	req.Host = "rebound.evil.example:8080"
	if res := do(t, req); res.code != http.StatusMisdirectedRequest {
		t.Errorf("GET / with Host %s = %d, want 421", req.Host, res.code)
	}
	req.Host = "localhost:8080"
	if res := do(t, req); res.code != http.StatusOK {
		t.Errorf("GET / with Host %s = %d, want 200", req.Host, res.code)
	}
}

func TestReadOnlyRefusesOpsAndShowsNoActions(t *testing.T) {
	r, _ := miniRig(t, func(c *Config) { c.ReadOnly = true })
	put(t, r.rdb, entry("demo", "demo-1", "running"))
	if res := r.post(t, "/api/op", "application/json", `{"service":"demo","op":"pull"}`); res.code != http.StatusForbidden {
		t.Errorf("POST /api/op read-only = %d, want 403", res.code)
	}
	if res := r.get(t, "/"); strings.Contains(res.body, `class="rolling"`) || !strings.Contains(res.body, "Read-only") {
		t.Errorf("the read-only fleet page offers a rolling restart or does not say it is read-only")
	}
}

func TestWithoutAKeyThePagesSayOpsAreUnsigned(t *testing.T) {
	r, _ := miniRig(t, nil)
	put(t, r.rdb, entry("demo", "demo-1", "running"))
	if res := r.get(t, "/"); !strings.Contains(res.body, "SG_CONTROL_KEY is unset") || !strings.Contains(res.body, `"signed":false`) {
		t.Errorf("the page does not say that ops go unsigned")
	}
	r2, _ := miniRig(t, func(c *Config) { c.ControlKey = []byte("0123456789abcdef") })
	if res := r2.get(t, "/"); strings.Contains(res.body, "SG_CONTROL_KEY is unset") || !strings.Contains(res.body, `"signed":true`) {
		t.Errorf("with a key the page still says ops go unsigned")
	}
	if strings.Contains(r2.get(t, "/").body, "0123456789abcdef") {
		t.Errorf("the control key reached the page")
	}
}

func TestAnOpForAnInstanceThatIsNotRunningIsNotSent(t *testing.T) {
	r, _ := miniRig(t, nil)
	put(t, r.rdb, entry("demo", "demo-1", "starting"))
	res := r.post(t, "/api/op", "application/json", `{"service":"demo","instance":"demo-1","op":"restart"}`)
	if res.code != http.StatusConflict || !strings.Contains(res.body, "no instance of \"demo\" is running") {
		t.Errorf("POST /api/op = %d %q, want 409 naming the service", res.code, res.body)
	}
	if n, _ := r.rdb.XLen(context.Background(), "sg:control:{demo}").Result(); n != 0 {
		t.Errorf("%d ops were written to the control stream", n)
	}
	for body, want := range map[string]string{
		`{"service":"demo","op":"reboot"}`:                    "want restart, pull, drain or undrain",
		`{"service":"de{mo}","op":"pull"}`:                    "invalid name",
		`{"service":"demo","op":"pull","max_unavailable":1}`:  "only for restart",
		`{"service":"demo","op":"drain","max_unavailable":1}`: "only for restart",
		`{"service":"demo","op":"pull","extra":true}`:         "unknown field",
	} {
		if res := r.post(t, "/api/op", "application/json", body); res.code != http.StatusBadRequest || !strings.Contains(res.body, want) {
			t.Errorf("POST /api/op %s = %d %q, want 400 with %q", body, res.code, res.body, want)
		}
	}
}
