package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// newBrowser starts a headless Chromium for the test, and returns its
// context and a function that returns the errors it reported so far
// (console errors, exceptions, log errors: CSP violations among them).
func newBrowser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 820))...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	var mu sync.Mutex
	var errs []string
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range ev.Args {
					args = append(args, fmt.Sprintf("%s%s", a.Value, a.Description))
				}
				errs = append(errs, "console."+string(ev.Type)+": "+strings.Join(args, " "))
			}
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			errs = append(errs, fmt.Sprintf("exception: %s at %s:%d", d.Text, d.URL, d.LineNumber))
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError {
				errs = append(errs, "log ("+string(ev.Entry.Source)+"): "+ev.Entry.Text+" "+ev.Entry.URL)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), errs...)
	}
}

// forgeEntry writes with raw commands, as a Redis writer without the
// control key can, the JSON of e under the key of service/instance, its
// index member and the services set.
func forgeEntry(t *testing.T, rdb redis.UniversalClient, service, instance string, e registry.Entry) {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	exp := time.Now().Add(10 * time.Minute)
	if err := rdb.Set(ctx, registry.EntryKey(service, instance), b, 10*time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.ZAdd(ctx, registry.IndexKey(service), redis.Z{Score: float64(exp.UnixMilli()), Member: instance})
	rdb.SAdd(ctx, registry.ServicesKey, service)
}

func transition(t *testing.T, rdb redis.UniversalClient, service, instance, to string) {
	t.Helper()
	if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: registry.EventsKey, Values: map[string]any{
		"service": service, "instance": instance, "event": "health_serving", "from": "serving_health", "to": to,
		"time": time.Now().UTC().Format(time.RFC3339Nano)}}).Err(); err != nil {
		t.Fatal(err)
	}
}

// The security review's forged row, in a real browser against two demo
// processes and a real redis-server: an entry under
// sg:registry:service:{evil}:decoy-2 saying service "demo", instance "",
// indexed under evil. Its Restart button used to send a signed restart to
// every demo instance (target "*"). Names come from keys: the row is not
// there; a crafted POST for one instance without a valid one is refused
// and sends nothing; the rolling restart, the one op for a whole service,
// says how many instances it restarts. Bidi overrides show as escapes,
// rendered by the server and live.
func TestTheForgedRowIsAbsentAndCraftedOpsSendNothing(t *testing.T) {
	srv := redistest.Server(t)
	demo := proctest.Build(t, proctest.Module+"/cmd/demo")
	sgctl := proctest.Build(t, proctest.Module+"/cmd/sgctl")
	common := []string{"REDIS_URL=" + srv.URL(), "SG_CONTROL_KEY=" + controlKey,
		"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none"}
	for _, id := range []string{"demo-1", "demo-2"} {
		proctest.Start(t, proctest.Cmd{Bin: demo, Name: id, Env: append(common, "SG_SERVICE_NAME=demo", "SG_INSTANCE_ID="+id,
			"SG_HEALTH_PORT=0", "SG_HEALTH_HOST=127.0.0.1", "SG_BOOT_JITTER=0")})
	}
	dash := proctest.Start(t, proctest.Cmd{Bin: sgctl, Name: "dashboard", Args: []string{"dashboard", "--listen", "127.0.0.1:0"}, Env: common})
	base := dash.WaitForMatch(t, regexp.MustCompile(`serving (http://127\.0\.0\.1:\d+/)`))[1]
	rdb := srv.Client(t)

	forged := registry.Entry{Service: "demo", Instance: "", Status: "running", Host: "forged", PID: 666,
		StartedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC(), Control: "signed"}
	forgeEntry(t, rdb, "evil", "decoy-2", forged)
	forged.Instance = "demo-1" // another instance's name, under a key of demo's
	forgeEntry(t, rdb, "demo", "ghost", forged)
	const bidiHost = "evil\u202egnp.exe"
	forgeEntry(t, rdb, "bidi", "bidi-1", registry.Entry{Service: "bidi", Instance: "bidi-1", Status: "running", Host: bidiHost,
		Version: "v1", PID: 7, StartedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC(), Control: "signed"})

	ctx, browserErrors := newBrowser(t)
	fleetFetches := `performance.getEntriesByType('resource').filter(e => e.name.includes('/api/fleet')).length`

	// 1. /service?name=evil lists nothing, rendered and after a refresh
	// from /api/fleet, and after a live transition of the decoy.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"service?name=evil")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, 10*time.Second, `document.getElementById('live').textContent`, func(s string) bool { return s == "live" }, "the page's stream open")
	transition(t, rdb, "evil", "decoy-2", "running")
	poll(t, ctx, 10*time.Second, `Array.from(document.querySelectorAll('#eventlog li')).some(li => li.textContent.includes('evil/decoy-2'))`,
		func(b bool) bool { return b }, "the decoy's transition in the list")
	poll(t, ctx, 15*time.Second, fleetFetches, func(n int) bool { return n >= 1 }, "one refresh from /api/fleet")
	if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('tr.inst').length`)); n != 0 {
		html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('section.service').outerHTML`))
		t.Errorf("/service?name=evil shows %d rows, want none:\n%s", n, html)
	}

	// 2. The fleet page: demo-1 and demo-2, no forged host.
	if err := chromedp.Do(ctx, chromedp.Navigate(base)); err != nil {
		t.Fatal(err)
	}
	rs := poll(t, ctx, 30*time.Second, rowsJS, func(rs []row) bool {
		m := rowsByID(rs)
		return m["demo-1"].Status == "running" && m["demo-2"].Status == "running"
	}, "demo-1 and demo-2 running on the fleet page")
	for _, r := range rs {
		if r.Host == "forged" || r.ID == "" {
			t.Errorf("the fleet page shows a forged row: %+v", r)
		}
	}
	if len(rs) != 3 { // demo-1, demo-2, bidi-1
		t.Errorf("the fleet page shows %d rows, want 3: %+v", len(rs), rs)
	}

	// 3. Bidi overrides: the host cell shows the escape, rendered by the
	// server; the page's text holds no U+202E.
	host := poll(t, ctx, 10*time.Second, `(document.querySelector('tr.inst[data-instance="bidi-1"] td.host') || {}).textContent || ''`,
		func(s string) bool { return s != "" }, "bidi-1's host cell")
	if host != `evil\u202egnp.exe` {
		t.Errorf("bidi-1's host cell reads %q, want the override escaped", host)
	}
	if raw, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.body.innerText.includes('\u202e')`)); raw {
		t.Errorf("the fleet page's text holds a raw U+202E")
	}

	// 4. The confirmations, cancelled: a row's names its one instance; the
	// rolling restart's says how many instances it restarts.
	confirmText := func(click string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, chromedp.Click(chromedp.CSS(click)), chromedp.WaitVisible(chromedp.CSS(`#confirm-cancel`))); err != nil {
			t.Errorf("clicking %s: no confirmation within 15s: %v", click, err)
			return ""
		}
		text, err := chromedp.Run(sctx, chromedp.TextContent(chromedp.CSS(`#confirm-text`)))
		if err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(sctx, chromedp.Click(chromedp.CSS(`#confirm-cancel`)), chromedp.WaitNotVisible(chromedp.CSS(`#confirm`))); err != nil {
			t.Fatal(err)
		}
		return text
	}
	if got := confirmText(`tr.inst[data-instance="demo-1"] button[data-op="restart"]`); !strings.HasPrefix(got, "Restart demo/demo-1?") {
		t.Errorf("demo-1's restart asks %q", got)
	}
	if got := confirmText(`section.service[data-service="demo"] form.rolling button[type="submit"]`); got != "Restart all 2 instances of demo, at most 1 out of running at a time?" {
		t.Errorf("the rolling restart asks %q, want all 2 instances", got)
	}

	// 5. Crafted POSTs. As a plain local curl sends them, without the
	// CSRF token of a page: 403, whatever they ask. With the token read
	// from the page: an empty, "*" or missing instance is a 400 naming the
	// field; the decoy's own key, a valid id of no live instance, is
	// refused too. None sends an op.
	csrf, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.parse(document.getElementById('config').textContent).csrf`))
	if err != nil || len(csrf) < 20 {
		t.Fatalf("the page's CSRF token: %q %v", csrf, err)
	}
	post := func(body, token string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, base+"api/op", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("X-CSRF-Token", token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		// One line: an error, or the "sent" line of an op that was sent
		// (whose stream goes on while the op is followed).
		reply, _ := bufio.NewReader(res.Body).ReadString('\n')
		res.Body.Close()
		return res.StatusCode, reply
	}
	if code, reply := post(`{"service":"demo","instance":"demo-1","op":"pull"}`, ""); code != http.StatusForbidden {
		t.Errorf("POST /api/op of a valid pull without the page's CSRF token = %d %q, want 403", code, reply)
	}
	for body, want := range map[string]int{
		`{"service":"evil","instance":"","op":"restart"}`:      http.StatusBadRequest,
		`{"service":"demo","instance":"","op":"restart"}`:      http.StatusBadRequest,
		`{"service":"demo","instance":"","op":"drain"}`:        http.StatusBadRequest,
		`{"service":"demo","op":"restart"}`:                    http.StatusBadRequest,
		`{"service":"demo","instance":"*","op":"restart"}`:     http.StatusBadRequest,
		`{"service":"evil","instance":"decoy-2","op":"drain"}`: http.StatusConflict,
	} {
		if code, reply := post(body, csrf); code != want {
			t.Errorf("POST /api/op %s = %d %q, want %d", body, code, reply, want)
		}
	}
	for _, svc := range []string{"demo", "evil"} {
		if n, err := rdb.XLen(context.Background(), "sg:control:{"+svc+"}").Result(); err != nil || n != 0 {
			t.Errorf("sg:control:{%s} holds %d ops (%v), want none", svc, n, err)
		}
	}

	// 6. The instance page: the entry's JSON escapes the override, rendered
	// by the server and after a live update.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"instance?service=bidi&id=bidi-1")); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, 10*time.Second, `document.getElementById('live').textContent`, func(s string) bool { return s == "live" }, "the page's stream open")
	entryText := `document.getElementById('entry').textContent`
	for _, how := range []string{"rendered by the server", "live"} {
		if how == "live" {
			forgeEntry(t, rdb, "bidi", "bidi-1", registry.Entry{Service: "bidi", Instance: "bidi-1", Status: "running", Host: bidiHost,
				Version: "v2\u2066", PID: 7, StartedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC(), Control: "signed"})
			transition(t, rdb, "bidi", "bidi-1", "running")
		}
		text := poll(t, ctx, 10*time.Second, entryText, func(s string) bool { return how != "live" || strings.Contains(s, `"version": "v2`) },
			"bidi-1's entry ("+how+")")
		if strings.ContainsAny(text, "\u202e\u2066") || !strings.Contains(text, `"host": "evil\u202egnp.exe"`) {
			t.Errorf("%s: the entry reads %q, want the overrides as \\u escapes", how, text)
		}
		if how == "live" && !strings.Contains(text, `"version": "v2\u2066"`) {
			t.Errorf("live: the entry reads %q, want the isolate as \\u2066", text)
		}
	}

	if errs := browserErrors(); len(errs) > 0 {
		t.Errorf("the browser reported errors:\n%s", strings.Join(errs, "\n"))
	}
}
