package dashboard

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
)

// With SG_DASHBOARD_TOKEN, in Chromium: the login form starts a session
// whose cookie is HttpOnly, SameSite=Strict and expires with the session;
// the fleet page's Log out button ends it on the server, so a copy of the
// cookie taken before is refused afterwards.
func TestLogInAndLogOutInARealBrowser(t *testing.T) {
	srv := redistest.Server(t)
	sgctl := proctest.Build(t, proctest.Module+"/cmd/sgctl")
	const token = "browser-dashboard-token-0123"
	dash := proctest.Start(t, proctest.Cmd{Bin: sgctl, Name: "dashboard", Args: []string{"dashboard", "--listen", "127.0.0.1:0", "--session-ttl", "2h"},
		Env: []string{"REDIS_URL=" + srv.URL(), "SG_DASHBOARD_TOKEN=" + token, "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none"}})
	base := dash.WaitForMatch(t, regexp.MustCompile(`serving (http://127\.0\.0\.1:\d+/)`))[1]

	ctx, _ := newBrowser(t)
	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(base)); err != nil {
		t.Fatal(err)
	}
	// The steps after the browser's first are bounded: a missing element
	// fails the test instead of hanging it.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx,
		chromedp.WaitVisible(chromedp.CSS(`input[name="token"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="token"]`), token),
		chromedp.Submit(chromedp.CSS(`input[name="token"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#logout`)),
	); err != nil {
		t.Fatalf("logging in: %v", err)
	}
	cookies, err := chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) (*network.GetCookiesResult, error) {
		res, err := cdp.Call(ctx, t, network.GetCookies, network.GetCookiesParams{URLs: []string{base}})
		return &res, err
	})
	if err != nil {
		t.Fatal(err)
	}
	var cookie *network.Cookie
	for _, c := range cookies.Cookies {
		if c.Name == "sg_dashboard" {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatalf("no session cookie among %v", cookies.Cookies)
	}
	expires := time.Unix(int64(cookie.Expires), 0)
	if !cookie.HTTPOnly || cookie.SameSite != network.CookieSameSiteStrict || cookie.Session ||
		expires.Before(start.Add(2*time.Hour-time.Minute)) || expires.After(time.Now().Add(2*time.Hour+time.Minute)) {
		t.Errorf("session cookie %+v (expires %v): want HttpOnly, SameSite=Strict, expiring in 2h", cookie, expires)
	}
	fleet := func() int {
		req, _ := http.NewRequest(http.MethodGet, base+"api/fleet", nil)
		req.Header.Set("Cookie", "sg_dashboard="+cookie.Value)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code := fleet(); code != http.StatusOK {
		t.Fatalf("GET /api/fleet with the browser's cookie = %d, want 200", code)
	}

	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`#logout`)),
		chromedp.WaitVisible(chromedp.CSS(`input[name="token"]`)),
	); err != nil {
		t.Fatalf("logging out: %v", err)
	}
	if code := fleet(); code != http.StatusUnauthorized {
		t.Errorf("GET /api/fleet with the cookie kept from before the logout = %d, want 401", code)
	}
	url, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil || !strings.HasSuffix(url, "/login") {
		t.Errorf("after Log out the browser is at %q (%v), want /login", url, err)
	}
}
