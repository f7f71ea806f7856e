package dashboard

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/internal/redistest"
)

// redisRig is a rig over a real redis-server of its own.
func redisRig(t *testing.T, mod func(*Config)) *rig {
	t.Helper()
	return newRig(t, redistest.Server(t).Client(t), mod)
}

// postOp sends op to /api/op as a client without a page would: with the
// headers hdr and nothing else.
func (r *rig) postOp(t *testing.T, op string, hdr ...string) resp {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.http.URL+"/api/op", strings.NewReader(op))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(t, req)
}

// controlOps is how many ops were written to service's control stream.
func (r *rig) controlOps(t *testing.T, service string) int64 {
	t.Helper()
	n, err := r.rdb.XLen(t.Context(), "sg:control:{"+service+"}").Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// The review's local curl -X POST, without an Origin header, got a signed
// pull done. Without SG_DASHBOARD_TOKEN every POST needs the token made
// when the dashboard started, which only its pages carry.
func TestWithoutATokenAPostWithoutThePagesCSRFTokenIsRefusedAndSendsNothing(t *testing.T) {
	r := redisRig(t, func(c *Config) { c.ControlKey, c.OpLimit = []byte(testControlKey), 200*time.Millisecond })
	put(t, r.rdb, entry("demo", "demo-1", "running"))
	const pull = `{"service":"demo","instance":"demo-1","op":"pull"}`
	for name, hdr := range map[string][]string{
		"curl":                       nil,
		"same Origin":                {"Origin", r.http.URL},
		"Sec-Fetch-Site same-origin": {"Sec-Fetch-Site", "same-origin"},
		"a wrong token":              {"X-CSRF-Token", "not-the-token", "Origin", r.http.URL},
		"an empty token":             {"X-CSRF-Token", ""},
	} {
		if res := r.postOp(t, pull, hdr...); res.code != http.StatusForbidden || !strings.Contains(res.body, "X-CSRF-Token") {
			t.Errorf("%s: POST /api/op = %d %q, want 403 naming X-CSRF-Token", name, res.code, res.body)
		}
	}
	if n := r.controlOps(t, "demo"); n != 0 {
		t.Fatalf("%d ops were sent without the token", n)
	}

	// The page carries it; with it, the op is sent.
	token := pageCSRF(t, r.get(t, "/").body)
	if len(token) < 20 {
		t.Fatalf("the fleet page's CSRF token is %q", token)
	}
	for _, page := range []string{"/service?name=demo", "/instance?service=demo&id=demo-1"} {
		if got := pageCSRF(t, r.get(t, page).body); got != token {
			t.Errorf("%s carries CSRF token %q, want the fleet page's %q", page, got, token)
		}
	}
	if res := r.postOp(t, pull, "X-CSRF-Token", token, "Origin", r.http.URL); res.code != http.StatusOK || !strings.Contains(res.body, `"type":"sent"`) {
		t.Fatalf("POST /api/op with the page's token = %d %q, want 200", res.code, res.body)
	}
	if n := r.controlOps(t, "demo"); n != 1 {
		t.Errorf("%d ops were sent with the token, want 1", n)
	}

	// Another start of the dashboard makes another token.
	r2, _ := miniRig(t, nil)
	if other := pageCSRF(t, r2.get(t, "/").body); other == token || other == "" {
		t.Errorf("two dashboards carry the tokens %q and %q, want two different ones", token, other)
	}
}

// With SG_DASHBOARD_TOKEN, a browser's session cookie alone does not make
// a POST: it needs the CSRF token of the session's pages too. A script's
// Authorization: Bearer needs none: no browser sends it on its own.
func TestWithATokenASessionsPostNeedsItsCSRFTokenAndBearerDoesNot(t *testing.T) {
	const token = "a-token-of-at-least-16-bytes"
	r := redisRig(t, func(c *Config) {
		c.Token, c.ControlKey, c.OpLimit = token, []byte(testControlKey), 200*time.Millisecond
	})
	put(t, r.rdb, entry("demo", "demo-1", "running"))
	cookie := login(t, r, token)
	const pull = `{"service":"demo","instance":"demo-1","op":"pull"}`
	if res := r.postOp(t, pull, "Cookie", cookie.Name+"="+cookie.Value); res.code != http.StatusForbidden {
		t.Errorf("POST /api/op with the session cookie and no CSRF token = %d %q, want 403", res.code, res.body)
	}
	if n := r.controlOps(t, "demo"); n != 0 {
		t.Fatalf("%d ops were sent without the CSRF token", n)
	}
	csrf := pageCSRF(t, r.get(t, "/", "Cookie", cookie.Name+"="+cookie.Value).body)
	if csrf == "" {
		t.Fatal("the session's page carries no CSRF token")
	}
	if res := r.postOp(t, pull, "Cookie", cookie.Name+"="+cookie.Value, "X-CSRF-Token", csrf); res.code != http.StatusOK {
		t.Errorf("POST /api/op with the session cookie and its page's CSRF token = %d %q, want 200", res.code, res.body)
	}
	if res := r.postOp(t, pull, "Authorization", "Bearer "+token); res.code != http.StatusOK {
		t.Errorf("POST /api/op with Authorization: Bearer = %d %q, want 200", res.code, res.body)
	}
	if n := r.controlOps(t, "demo"); n != 2 {
		t.Errorf("%d ops were sent, want 2", n)
	}
}
