package main

import (
	"context"
	"io"
	"net/http"
	neturl "net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

func TestDashboardOnANonLoopbackAddressWithoutATokenExits2BeforeTouchingRedis(t *testing.T) {
	// Nothing listens on port 1: reaching for Redis would exit 3, not 2.
	env := map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0"}
	for _, listen := range []string{"0.0.0.0:0", ":0", "192.0.2.1:8080", "dashboard.example:8080"} {
		r := sgctl(t, t.Context(), env, nil, "dashboard", "--listen", listen)
		if r.code != exitUsage || !strings.Contains(r.stderr, "SG_DASHBOARD_TOKEN") || !strings.Contains(r.stderr, "not a loopback address") {
			t.Errorf("--listen %s without a token: exit %d, stderr %q; want 2 naming SG_DASHBOARD_TOKEN", listen, r.code, r.stderr)
		}
	}
	env[envDashboardToken] = "short"
	if r := sgctl(t, t.Context(), env, nil, "dashboard", "--listen", "0.0.0.0:0"); r.code != exitUsage || !strings.Contains(r.stderr, "at least 16") {
		t.Errorf("a 5-byte token: exit %d, stderr %q; want 2", r.code, r.stderr)
	}
	if r := sgctl(t, t.Context(), env, nil, "dashboard", "--listen", "127.0.0.1"); r.code != exitUsage || !strings.Contains(r.stderr, "host:port") {
		t.Errorf("--listen without a port: exit %d, stderr %q; want 2", r.code, r.stderr)
	}
}

// startDashboard runs sgctl dashboard in-process until the test ends and
// returns its base URL, read from the line it prints.
func startDashboard(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	a := newTestApp(env, nil, &stdout, &stderr)
	done := make(chan int, 1)
	go func() { done <- a.main(ctx, append([]string{"dashboard"}, args...)) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("sgctl dashboard exited %d after Ctrl-C, want 0\n%s", code, stderr.String())
			}
		case <-time.After(10 * time.Second):
			t.Errorf("sgctl dashboard did not stop within 10s of Ctrl-C")
		}
	})
	re := regexp.MustCompile(`serving (http://127\.0\.0\.1:\d+/)`)
	var url string
	eventually(t, 10*time.Second, func() bool {
		if m := re.FindStringSubmatch(stdout.String()); m != nil {
			url = m[1]
			return true
		}
		select {
		case code := <-done:
			t.Fatalf("sgctl dashboard exited %d: %s", code, stderr.String())
		default:
		}
		return false
	}, func() string { return "no serving line: " + stdout.String() + stderr.String() })
	return url
}

func TestDashboardWithATokenAnswers401ToRequestsWithoutIt(t *testing.T) {
	mr := miniredis.RunT(t)
	const token = "dashboard-token-0123456789"
	url := startDashboard(t, map[string]string{"REDIS_URL": "redis://" + mr.Addr(), envDashboardToken: token}, "--listen", "127.0.0.1:0")
	get := func(auth string) int {
		req, _ := http.NewRequest(http.MethodGet, url+"api/fleet", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode
	}
	if code := get(""); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d, want 401", code)
	}
	if code := get("Bearer not-the-token-at-all"); code != http.StatusUnauthorized {
		t.Errorf("with a wrong token: %d, want 401", code)
	}
	if code := get("Bearer " + token); code != http.StatusOK {
		t.Errorf("with the token: %d, want 200", code)
	}
}

func TestDashboardOnLoopbackRefusesAnotherHostName(t *testing.T) {
	mr := miniredis.RunT(t)
	url := startDashboard(t, map[string]string{"REDIS_URL": "redis://" + mr.Addr()}, "--listen", "127.0.0.1:0")
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = "attacker.example" + strings.TrimPrefix(strings.TrimSuffix(url, "/"), "http://127.0.0.1")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("GET / with Host %s: %d, want 421", req.Host, res.StatusCode)
	}
	res, err = http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("GET %s: %d, want 200", url, res.StatusCode)
	}
}

func TestDashboardRefusesABadPublicURLOrSessionTTLWithExit2(t *testing.T) {
	// Nothing listens on port 1: reaching for Redis would exit 3, not 2.
	env := map[string]string{"REDIS_URL": "redis://127.0.0.1:1/0"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--public-url", "dashboard.example.com"}, `--public-url: "dashboard.example.com": want an http or https URL`},
		{[]string{"--public-url", "https://dashboard.example.com/sg"}, "want no path"},
		{[]string{"--public-url", "https://dashboard.example.com"}, "--public-url https://dashboard.example.com is reached across a network: set SG_DASHBOARD_TOKEN"},
		{[]string{"--session-ttl", "0s"}, `invalid value "0s" for flag --session-ttl`},
	} {
		r := sgctl(t, t.Context(), env, nil, append([]string{"dashboard"}, tc.args...)...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}

// Behind a TLS proxy on the same host: the proxy's plain-HTTP requests
// carry the public Host, and the session cookie is Secure.
func TestDashboardBehindAnHTTPSPublicURLSetsASecureCookie(t *testing.T) {
	mr := miniredis.RunT(t)
	const token = "dashboard-token-0123456789"
	base := startDashboard(t, map[string]string{"REDIS_URL": "redis://" + mr.Addr(), envDashboardToken: token},
		"--listen", "127.0.0.1:0", "--public-url", "https://dashboard.example.com", "--session-ttl", "1h")
	get := func(path string) string {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Host = "dashboard.example.com"
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s with Host dashboard.example.com = %d, want 200", path, res.StatusCode)
		}
		return string(b)
	}
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(get("login"))
	if m == nil {
		t.Fatal("the login page has no csrf field")
	}
	req, _ := http.NewRequest(http.MethodPost, base+"login", strings.NewReader(neturl.Values{"token": {token}, "csrf": {m[1]}}.Encode()))
	req.Host = "dashboard.example.com"
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://dashboard.example.com")
	res, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if sc := res.Header.Get("Set-Cookie"); res.StatusCode != http.StatusSeeOther ||
		!strings.Contains(sc, "; Secure") || !strings.Contains(sc, "Max-Age=3600") || !strings.Contains(sc, "HttpOnly") {
		t.Errorf("POST /login = %d, Set-Cookie %q: want 303 and a Secure, HttpOnly cookie of Max-Age=3600", res.StatusCode, sc)
	}
}
