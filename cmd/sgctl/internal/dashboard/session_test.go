package dashboard

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const testToken = "a-token-of-at-least-16-bytes"

// clock is a settable Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 12, 4, 9, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// noRedirects is a client that returns a redirect instead of following it.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// loginRes posts the login form to base as the login page does (its csrf
// field) with token, through client, and returns the answer, its body
// read.
func loginRes(t *testing.T, client *http.Client, base, token string) *http.Response {
	t.Helper()
	res, err := client.Get(base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	csrf := pageCSRF(t, string(page))
	if csrf == "" {
		t.Fatalf("GET /login = %d without a csrf field", res.StatusCode)
	}
	form := url.Values{"token": {token}, csrfField: {csrf}}
	req, _ := http.NewRequest(http.MethodPost, base+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if res, err = client.Do(req); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

// login logs in to r with token and returns the session cookie.
func login(t *testing.T, r *rig, token string) *http.Cookie {
	t.Helper()
	res := loginRes(t, noRedirects, r.http.URL, token)
	for _, c := range res.Cookies() {
		if c.Name == cookieName && c.Value != "" {
			if res.StatusCode != http.StatusSeeOther {
				t.Fatalf("POST /login = %d", res.StatusCode)
			}
			return c
		}
	}
	t.Fatalf("POST /login = %d without a session cookie", res.StatusCode)
	return nil
}

func cookieHdr(c *http.Cookie) []string { return []string{"Cookie", c.Name + "=" + c.Value} }

// logout posts /logout with the session cookie c and the CSRF token of
// its pages.
func logout(t *testing.T, r *rig, c *http.Cookie) resp {
	t.Helper()
	csrf := pageCSRF(t, r.get(t, "/", cookieHdr(c)...).body)
	req, _ := http.NewRequest(http.MethodPost, r.http.URL+"/logout", nil)
	req.Header.Set("Cookie", c.Name+"="+c.Value)
	req.Header.Set(csrfHeader, csrf)
	res, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return resp{code: res.StatusCode, hdr: res.Header}
}

// The review: the cookie's value was a fixed HMAC of the token, so logout
// could not revoke it. Now it names a session that logout ends: a copy of
// the cookie kept from before is refused afterwards.
func TestLogoutRevokesTheSessionEvenForACopyOfItsCookie(t *testing.T) {
	r := redisRig(t, func(c *Config) {
		c.Token, c.ControlKey, c.OpLimit = testToken, []byte(testControlKey), 200*time.Millisecond
	})
	put(t, r.rdb, entry("demo", "demo-1", "running"))
	kept := login(t, r, testToken)
	if res := r.get(t, "/", cookieHdr(kept)...); res.code != http.StatusOK {
		t.Fatalf("GET / with the session cookie = %d, want 200", res.code)
	}
	csrf := pageCSRF(t, r.get(t, "/", cookieHdr(kept)...).body)
	if other := login(t, r, testToken); other.Value == kept.Value || strings.Contains(kept.Value, testToken) {
		t.Errorf("two logins got the cookies %q and %q: want two random values, neither the token", kept.Value, other.Value)
	}

	res := logout(t, r, kept)
	if res.code != http.StatusSeeOther {
		t.Fatalf("POST /logout = %d, want 303", res.code)
	}
	if sc := res.hdr.Get("Set-Cookie"); !strings.Contains(sc, cookieName+"=;") || !strings.Contains(sc, "Max-Age=0") {
		t.Errorf("POST /logout sets %q: want the cookie dropped", sc)
	}
	for _, path := range []string{"/", "/api/fleet", "/events", "/instance?service=demo&id=demo-1"} {
		// Headers only: /events, were it served, would stream on.
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.http.URL+path, nil)
		req.Header.Set("Cookie", kept.Name+"="+kept.Value)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		res.Body.Close()
		cancel()
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s with the logged-out cookie = %d, want 401", path, res.StatusCode)
		}
	}
	if res := r.postOp(t, `{"service":"demo","instance":"demo-1","op":"pull"}`, append(cookieHdr(kept), csrfHeader, csrf)...); res.code != http.StatusUnauthorized {
		t.Errorf("POST /api/op with the logged-out cookie and its CSRF token = %d %q, want 401", res.code, res.body)
	}
	if n := r.controlOps(t, "demo"); n != 0 {
		t.Errorf("%d ops were sent after the logout", n)
	}
}

// Logging out needs the session's CSRF token: another site cannot end an
// operator's session, and a login needs the login page's.
func TestLoginAndLogoutWithoutTheCSRFTokenAreRefused(t *testing.T) {
	r := redisRig(t, func(c *Config) { c.Token = testToken })
	req, _ := http.NewRequest(http.MethodPost, r.http.URL+"/login", strings.NewReader("token="+url.QueryEscape(testToken)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	res, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden || len(res.Cookies()) != 0 {
		t.Errorf("POST /login with the token and no CSRF token = %d, cookies %v: want 403 and none", res.StatusCode, res.Cookies())
	}

	c := login(t, r, testToken)
	req, _ = http.NewRequest(http.MethodPost, r.http.URL+"/logout", nil)
	req.Header.Set("Cookie", c.Name+"="+c.Value)
	res, err = noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Errorf("POST /logout without the CSRF token = %d, want 403", res.StatusCode)
	}
	if res := r.get(t, "/", cookieHdr(c)...); res.code != http.StatusOK {
		t.Errorf("after a refused logout, GET / with the cookie = %d, want 200 (the session goes on)", res.code)
	}
	// The login page's token is not a session's: it cannot log out.
	req, _ = http.NewRequest(http.MethodPost, r.http.URL+"/logout", nil)
	req.Header.Set("Cookie", c.Name+"="+c.Value)
	req.Header.Set(csrfHeader, pageCSRF(t, r.get(t, "/login").body))
	if res := do(t, req); res.code != http.StatusForbidden {
		t.Errorf("POST /logout with the login page's CSRF token = %d, want 403", res.code)
	}
}

// A session lasts Config.SessionTTL from the login, on the dashboard's
// clock: refused from then on, and its cookie says so (Max-Age, Expires).
func TestAnExpiredSessionIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		want time.Duration
	}{{"default", 0, 12 * time.Hour}, {"configured", 90 * time.Minute, 90 * time.Minute}} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			r := redisRig(t, func(c *Config) { c.Token, c.SessionTTL, c.Now = testToken, tc.ttl, clk.now })
			c := login(t, r, testToken)
			if c.MaxAge != int(tc.want/time.Second) || !c.Expires.Equal(clk.now().Add(tc.want)) {
				t.Errorf("cookie Max-Age=%d Expires=%v, want %d and %v", c.MaxAge, c.Expires, int(tc.want/time.Second), clk.now().Add(tc.want))
			}
			clk.advance(tc.want - time.Second)
			if res := r.get(t, "/api/fleet", cookieHdr(c)...); res.code != http.StatusOK {
				t.Errorf("GET /api/fleet a second before the session ends = %d, want 200", res.code)
			}
			clk.advance(time.Second)
			if res := r.get(t, "/api/fleet", cookieHdr(c)...); res.code != http.StatusUnauthorized {
				t.Errorf("GET /api/fleet when the session ends = %d, want 401", res.code)
			}
			if res := r.get(t, "/api/fleet", "Authorization", "Bearer "+testToken); res.code != http.StatusOK {
				t.Errorf("GET /api/fleet with the Bearer token = %d, want 200 (no session)", res.code)
			}
		})
	}
}

// The review: the cookie was Secure only on a request that came over TLS,
// so never behind the TLS proxy the README recommends. It is Secure when
// the public URL is https, or the request is TLS.
func TestTheSessionCookieIsSecureBehindAnHTTPSPublicURL(t *testing.T) {
	secure := func(t *testing.T, client *http.Client, base string) bool {
		t.Helper()
		res := loginRes(t, client, base, testToken)
		for _, c := range res.Cookies() {
			if c.Name == cookieName {
				if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
					t.Errorf("cookie %+v: want HttpOnly, SameSite=Strict, Path=/", c)
				}
				return c.Secure
			}
		}
		t.Fatalf("POST /login = %d without a cookie", res.StatusCode)
		return false
	}
	plain := redisRig(t, func(c *Config) { c.Token = testToken })
	if secure(t, noRedirects, plain.http.URL) {
		t.Error("without a public URL, over plain HTTP: the cookie is Secure, want not (a browser would drop it)")
	}
	proxied := redisRig(t, func(c *Config) { c.Token, c.PublicURL = testToken, "https://dashboard.example.com" })
	if !secure(t, noRedirects, proxied.http.URL) {
		t.Error("public URL https, request over plain HTTP (as from the TLS proxy): the cookie is not Secure")
	}
	http1 := redisRig(t, func(c *Config) { c.Token, c.PublicURL = testToken, "http://127.0.0.1:8080" })
	if secure(t, noRedirects, http1.http.URL) {
		t.Error("public URL http: the cookie is Secure, want not")
	}
	// Served over TLS itself (httptest binds 127.0.0.1).
	ts := httptest.NewUnstartedServer(plain.srv)
	ts.StartTLS()
	defer ts.Close()
	client := ts.Client()
	client.CheckRedirect = noRedirects.CheckRedirect
	if !secure(t, client, ts.URL) {
		t.Error("a request over TLS: the cookie is not Secure")
	}
}

func TestAPublicURLThatIsNotOneIsRefusedNamingIt(t *testing.T) {
	for in, want := range map[string]string{
		"ftp://dash.example":              `"ftp://dash.example": want an http or https URL`,
		"dash.example":                    `"dash.example": want an http or https URL`,
		"https://":                        `"https://" has no host`,
		"https://dash.example/dashboard":  `"https://dash.example/dashboard": want no path`,
		"https://op:secret@dash.example/": "want no user information",
	} {
		_, err := New(Config{Redis: redisNeverCalled(t), PublicURL: in})
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "secret") {
			t.Errorf("PublicURL %q: error %v, want one containing %q (and no password)", in, err, want)
		}
	}
	for _, ok := range []string{"", "https://dash.example", "https://dash.example:8443/", "http://127.0.0.1:8080"} {
		if _, err := New(Config{Redis: redisNeverCalled(t), PublicURL: ok}); err != nil {
			t.Errorf("PublicURL %q: %v", ok, err)
		}
	}
}

// redisNeverCalled is a client for a Server that a test never serves.
func redisNeverCalled(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { c.Close() })
	return c
}
