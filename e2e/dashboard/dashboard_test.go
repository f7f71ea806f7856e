package dashboard

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(proctest.Main(m))
}

const controlKey = "browser-test-key-0123456789"

func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not on PATH (apt-get install -y chromium)")
	}
	t.Skip("chromium is not on PATH: apt-get install -y chromium to run")
	return ""
}

// poll evaluates expr in the page until ok accepts its result or timeout
// passes, and returns the last result.
func poll[T any](t *testing.T, ctx context.Context, timeout time.Duration, expr string, ok func(T) bool, what string) T {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
		if err == nil && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s (last: %v, err %v)", timeout, what, v, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type row struct {
	Status  string `json:"status"`
	Started int64  `json:"started"`
	Uptime  string `json:"uptime"`
	Host    string `json:"host"`
	ID      string `json:"id"`
}

// rowsJS reads the instance rows of the page as the test sees them.
const rowsJS = `Array.from(document.querySelectorAll('tr.inst')).map(tr => ({
  status: tr.dataset.status, started: Number(tr.dataset.started),
  uptime: tr.querySelector('td.uptime').textContent, host: tr.querySelector('td.host').textContent,
  id: tr.querySelector('td.instance').textContent}))`

func rowsByID(rs []row) map[string]row {
	m := map[string]row{}
	for _, r := range rs {
		m[r.ID] = r
	}
	return m
}

func TestDashboardInARealBrowser(t *testing.T) {
	srv := redistest.Server(t)
	demo := proctest.Build(t, proctest.Module+"/cmd/demo")
	sgctl := proctest.Build(t, proctest.Module+"/cmd/sgctl")
	common := []string{"REDIS_URL=" + srv.URL(), "SG_CONTROL_KEY=" + controlKey,
		"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none"}
	ids := []string{"demo-1", "demo-2", "demo-3"}
	for _, id := range ids {
		proctest.Start(t, proctest.Cmd{Bin: demo, Name: id, Env: append(common, "SG_SERVICE_NAME=demo", "SG_INSTANCE_ID="+id, "SG_HEALTH_PORT=0",
			"SG_HEALTH_HOST=127.0.0.1", "SG_BOOT_JITTER=0", "DEMO_PHASE_DELAY=loading_modules=300ms,starting=500ms")})
	}
	dash := proctest.Start(t, proctest.Cmd{Bin: sgctl, Name: "dashboard", Args: []string{"dashboard", "--listen", "127.0.0.1:0"}, Env: common})
	base := dash.WaitForMatch(t, regexp.MustCompile(`serving (http://127\.0\.0\.1:\d+/)`))[1]

	// The browser, with every error it reports collected.
	ctx, browserErrors := newBrowser(t)
	if err := chromedp.Do(ctx, chromedp.Navigate(base)); err != nil {
		t.Fatal(err)
	}

	// 1. The three instances, running (the page follows their boot live).
	first := poll(t, ctx, 30*time.Second, rowsJS, func(rs []row) bool {
		m := rowsByID(rs)
		for _, id := range ids {
			if m[id].Status != "running" {
				return false
			}
		}
		return true
	}, "three instances running on the fleet page")
	t.Logf("fleet page: %+v", first)
	// From here on the page must never reload: a marker that a reload would
	// wipe. (Before, it may: a service that appears after the page was
	// rendered is laid out by a reload.)
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.__noReload = 'still here'`)); err != nil {
		t.Fatal(err)
	}

	// 2. A transition appears without a reload within a second: a pull on
	// demo-1, sent from outside the page.
	rdb := srv.Client(t)
	client := controlops.NewClient(rdb, []byte(controlKey))
	if _, err := client.Send(t.Context(), "demo", controlops.OpPull, "demo-1", nil); err != nil {
		t.Fatal(err)
	}
	type seen struct {
		ID       string `json:"id"`
		Observed int64  `json:"observed"`
		Marker   string `json:"marker"`
	}
	got := poll(t, ctx, 10*time.Second, `(() => {
	  const li = Array.from(document.querySelectorAll('#eventlog li')).find(li => li.textContent.includes('demo/demo-1') && li.textContent.includes('running → pulling'));
	  return li ? {id: li.dataset.id || '', observed: Date.now(), marker: window.__noReload || ''} : {id: '', observed: 0, marker: window.__noReload || ''};
	})()`, func(s seen) bool { return s.ID != "" }, "demo-1's running → pulling in the transitions list")
	if got.Marker != "still here" {
		t.Errorf("the page was reloaded")
	}
	ms, _ := strconv.ParseInt(strings.Split(got.ID, "-")[0], 10, 64)
	lag := time.Duration(got.Observed-ms) * time.Millisecond
	t.Logf("running → pulling: written to sg:events at %d, on the page %v later (polled every 20ms)", ms, lag)
	if lag > time.Second {
		t.Errorf("the transition reached the page %v after it was written, want within 1s", lag)
	}

	// 3. Restart demo-2 from the page: click, confirm, watch it leave
	// running and come back as a new process.
	before := rowsByID(first)["demo-2"]
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`tr.inst:nth-child(2) button[data-op="restart"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-ok`)),
		chromedp.Click(chromedp.CSS(`#confirm-ok`)),
	); err != nil {
		t.Fatal(err)
	}
	left := poll(t, ctx, 30*time.Second, rowsJS, func(rs []row) bool { return rowsByID(rs)["demo-2"].Status != "running" }, "demo-2 leaving running")
	t.Logf("demo-2 left running: %+v", rowsByID(left)["demo-2"])
	back := poll(t, ctx, 30*time.Second, rowsJS, func(rs []row) bool {
		r := rowsByID(rs)["demo-2"]
		return r.Status == "running" && r.Started > before.Started
	}, "demo-2 back in running with a new started_at")
	t.Logf("demo-2 back: %+v (was %+v)", rowsByID(back)["demo-2"], before)
	poll(t, ctx, 30*time.Second, `(document.querySelector('#oplog > li') || {dataset: {}}).dataset.done || ''`,
		func(s string) bool { return s != "" }, "the op's summary")
	summary, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#oplog > li').textContent`))
	if !strings.Contains(summary, "demo-2: done") || !strings.Contains(summary, "every instance done and serving") {
		t.Errorf("the operations panel does not show demo-2's result: %q", summary)
	}
	marker, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`window.__noReload || ''`))
	if marker != "still here" {
		t.Errorf("the page was reloaded during the restart")
	}

	if path := os.Getenv("DASHBOARD_SCREENSHOT"); path != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot written to %s", path)
	}

	// 4. Drain demo-1 from the page, then undrain it: each button is shown
	// only in the status that accepts its op, and each op is followed to
	// the status it leads to.
	buttons := func(want string) {
		t.Helper()
		poll(t, ctx, 10*time.Second, `Array.from(document.querySelectorAll('tr.inst[data-instance="demo-1"] button[data-op]'))
		  .filter(b => !b.hidden).map(b => b.dataset.op + (b.disabled ? '(off)' : '')).join(' ')`,
			func(s string) bool { return s == want }, "demo-1's buttons "+want)
	}
	for i, step := range []struct{ op, status, until, buttons string }{
		{"drain", "draining", "draining", "pull(off) restart undrain"},
		{"undrain", "running", "serving", "pull restart drain"},
	} {
		if i == 0 {
			buttons("pull restart drain")
		}
		if err := chromedp.Do(ctx,
			chromedp.Click(chromedp.CSS(`tr.inst[data-instance="demo-1"] button[data-op="`+step.op+`"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#confirm-ok`)),
			chromedp.Click(chromedp.CSS(`#confirm-ok`)),
		); err != nil {
			t.Fatal(err)
		}
		poll(t, ctx, 20*time.Second, rowsJS, func(rs []row) bool { return rowsByID(rs)["demo-1"].Status == step.status }, "demo-1 "+step.status)
		buttons(step.buttons)
		poll(t, ctx, 20*time.Second, `document.querySelectorAll('#oplog > li').length === `+strconv.Itoa(i+2)+` && document.querySelector('#oplog > li').dataset.done || ''`,
			func(s string) bool { return s != "" }, "the "+step.op+"'s summary")
		summary, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#oplog > li').textContent`))
		if !strings.Contains(summary, "demo-1: done") || !strings.Contains(summary, "every instance done and "+step.until) {
			t.Errorf("the operations panel does not show the %s of demo-1 done: %q", step.op, summary)
		}
	}

	// 4b. The rolling restart from the service's form: the dashboard runs
	// it, one instance at a time (the form's default), and the operations
	// panel shows each one back. The page samples its own rows every 10ms:
	// never more than one instance out of running.
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => {
	  window.__maxOut = 0;
	  window.__sampler = setInterval(() => {
	    const out = Array.from(document.querySelectorAll('section.service[data-service="demo"] tr.inst')).filter(tr => tr.dataset.status !== 'running').length;
	    window.__maxOut = Math.max(window.__maxOut, out);
	  }, 10);
	  return true;
	})()`)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS(`section.service[data-service="demo"] form.rolling button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-ok`)),
		chromedp.Click(chromedp.CSS(`#confirm-ok`)),
	); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, 90*time.Second, `document.querySelectorAll('#oplog > li').length === 4 && document.querySelector('#oplog > li').dataset.done || ''`,
		func(s string) bool { return s != "" }, "the rolling restart's summary")
	rolled, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`clearInterval(window.__sampler), document.querySelector('#oplog > li').textContent`))
	maxOut, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`window.__maxOut`))
	t.Logf("rolling restart from the page: at most %d out of running on the page; panel: %q", maxOut, rolled)
	for _, want := range []string{"demo-1 is back", "demo-2 is back", "demo-3 is back", "every instance done and serving"} {
		if !strings.Contains(rolled, want) {
			t.Errorf("the operations panel does not say %q: %q", want, rolled)
		}
	}
	if maxOut != 1 {
		t.Errorf("the page showed at most %d instances out of running during the rolling restart, want 1", maxOut)
	}

	// 5. demo-3's waterfall shows DEMO_PHASE_DELAY.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"instance?service=demo&id=demo-3")); err != nil {
		t.Fatal(err)
	}
	type step struct {
		State string `json:"state"`
		Ms    int64  `json:"ms"`
	}
	steps := poll(t, ctx, 10*time.Second, `Array.from(document.querySelectorAll('g.wf-row')).map(g => ({state: g.dataset.state, ms: Number(g.dataset.ms)}))`,
		func(s []step) bool { return len(s) >= 9 }, "the waterfall's rows")
	t.Logf("waterfall of demo-3: %+v", steps)
	want := map[string]int64{"loading_modules": 300, "starting": 500}
	for _, s := range steps {
		if w, ok := want[s.State]; ok {
			if s.Ms < w || s.Ms > w+400 {
				t.Errorf("waterfall: %s took %dms, want about %dms (DEMO_PHASE_DELAY)", s.State, s.Ms, w)
			}
			delete(want, s.State)
		} else if s.Ms >= 300 {
			t.Errorf("waterfall: %s took %dms, though only loading_modules and starting are slowed", s.State, s.Ms)
		}
	}
	if len(want) > 0 {
		t.Errorf("waterfall lacks %v", want)
	}
	var img struct {
		Src   string `json:"src"`
		Width int    `json:"width"`
	}
	poll(t, ctx, 10*time.Second, `(() => { const i = document.getElementById('diagram'); return {src: i.getAttribute('src'), width: i.naturalWidth}; })()`,
		func(v struct {
			Src   string `json:"src"`
			Width int    `json:"width"`
		}) bool {
			img = v
			return v.Width > 0
		}, "the diagram image loaded")
	if img.Src != "/diagram.svg?state=running" {
		t.Errorf("the diagram highlights %q, want running", img.Src)
	}

	// 6. Hostile values in Redis render as text, live and after a reload.
	// (Under an instance id that is a name: an entry under any other key is
	// not listed, see TestTheForgedRowIsAbsentAndCraftedOpsSendNothing.)
	const evilHost = `<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">`
	const evilID = "evil-1"
	e := registry.Entry{Service: "demo", Instance: evilID, Status: "running", Host: evilHost, PID: 1, Version: "v\x1b[31m",
		StartedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC(), Control: "signed"}
	raw, _ := json.Marshal(e)
	if err := chromedp.Do(ctx, chromedp.Navigate(base)); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, 10*time.Second, `document.getElementById('live').textContent`, func(s string) bool { return s == "live" }, "the page's stream open")
	bg := context.Background()
	rdb.Set(bg, registry.EntryKey("demo", evilID), raw, time.Minute)
	rdb.ZAdd(bg, registry.IndexKey("demo"), redis.Z{Score: float64(time.Now().Add(time.Minute).UnixMilli()), Member: evilID})
	rdb.XAdd(bg, &redis.XAddArgs{Stream: registry.EventsKey, Values: map[string]any{"service": "demo", "instance": evilID,
		"event": "health_serving", "from": "serving_health", "to": "running", "time": time.Now().UTC().Format(time.RFC3339Nano), "error": evilHost}})
	for _, how := range []string{"live", "rendered by the server"} {
		if how != "live" {
			if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
				t.Fatal(err)
			}
		}
		r := poll(t, ctx, 10*time.Second, rowsJS, func(rs []row) bool { return rowsByID(rs)[evilID].Host != "" }, "the hostile row ("+how+")")
		if h := rowsByID(r)[evilID].Host; h != evilHost {
			t.Errorf("%s: the host cell reads %q, want the value as text", how, h)
		}
		version, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('tr.inst[data-instance="evil-1"] td.version').textContent`))
		if version != `v\x1b[31m` {
			t.Errorf("%s: the version cell reads %q, want the escape sequence shown as text", how, version)
		}
		pwned, _ := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.__pwned !== undefined`))
		imgs, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('img[src=x]').length`))
		if pwned || imgs > 0 {
			t.Errorf("%s: the value from Redis ran as HTML (pwned %v, %d injected images)", how, pwned, imgs)
		}
	}

	if errs := browserErrors(); len(errs) > 0 {
		t.Errorf("the browser reported errors:\n%s", strings.Join(errs, "\n"))
	}
}
