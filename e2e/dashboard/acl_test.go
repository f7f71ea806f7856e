package dashboard

import (
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/redistest"
)

// actionsView is what the test reads of a page's actions.
type actionsView struct {
	Rows   int      `json:"rows"`
	Status string   `json:"status"`
	Banner string   `json:"banner"`
	Off    []bool   `json:"off"`    // each row button's disabled
	Titles []string `json:"titles"` // and its title
	Roll   bool     `json:"roll"`   // the rolling restart's button disabled
}

const actionsJS = `(() => {
  const tr = document.querySelector('tr.inst');
  const bs = tr ? Array.from(tr.querySelectorAll('button[data-op]')).filter(b => !b.hidden) : [];
  const banner = document.querySelector('p.denied');
  const roll = document.querySelector('form.rolling button');
  return {rows: document.querySelectorAll('tr.inst').length, status: tr ? tr.dataset.status : '',
    banner: banner ? banner.textContent : '', off: bs.map(b => b.disabled), titles: bs.map(b => b.title),
    roll: roll ? roll.disabled : false};
})()`

// The dashboard of a sg-reader user (its line read from docs/redis-acl.md)
// in a real browser: the fleet shows, live, and every action is disabled,
// the page and each button's title saying why and which role to use.
func TestTheDashboardOfASgReaderUser(t *testing.T) {
	chrome := chromium(t)
	srv := redistest.Server(t)
	path, err := redisacl.FindDoc()
	if err != nil {
		t.Fatal(err)
	}
	lines, err := redisacl.ReadDoc(path)
	if err != nil {
		t.Fatal(err)
	}
	line, err := redisacl.RoleLine(lines, redisacl.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := redisacl.SetUser(t.Context(), srv.Client(t), "sg-reader", "reader-pw", line.Rules()); err != nil {
		t.Fatal(err)
	}
	quiet := []string{"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none"}
	proctest.Start(t, proctest.Cmd{Bin: proctest.Build(t, proctest.Module+"/cmd/demo"), Name: "demo-1", Env: append([]string{
		"REDIS_URL=" + srv.URL(), "SG_SERVICE_NAME=demo", "SG_INSTANCE_ID=demo-1", "SG_HEALTH_PORT=0", "SG_HEALTH_HOST=127.0.0.1",
		"SG_BOOT_JITTER=0", "SG_CONTROL_KEY=" + controlKey}, quiet...)})
	readerURL := "redis://" + url.UserPassword("sg-reader", "reader-pw").String() + "@" + srv.Addr() + "/0"
	dash := proctest.Start(t, proctest.Cmd{Bin: proctest.Build(t, proctest.Module+"/cmd/sgctl"), Name: "dashboard",
		Args: []string{"dashboard", "--listen", "127.0.0.1:0"}, Env: append([]string{"REDIS_URL=" + readerURL, "SG_CONTROL_KEY=" + controlKey}, quiet...)})
	base := dash.WaitForMatch(t, regexp.MustCompile(`serving (http://127\.0\.0\.1:\d+/)`))[1]

	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()))...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(actx)
	defer cancelCtx()
	const why = "this Redis user cannot send control ops (XADD to sg:control:{demo} refused): use the sg-operator role"
	for _, page := range []string{"", "service?name=demo", "instance?service=demo&id=demo-1"} {
		if err := chromedp.Do(ctx, chromedp.Navigate(base+page)); err != nil {
			t.Fatal(err)
		}
		expr := actionsJS
		if strings.HasPrefix(page, "instance") {
			expr = strings.Replace(actionsJS, `document.querySelector('tr.inst')`, `document.getElementById('inst-actions')`, 1)
		}
		v := poll(t, ctx, 30*time.Second, expr, func(v actionsView) bool {
			return v.Status == "running" && len(v.Off) > 0
		}, "demo-1 running on /"+page)
		if !strings.HasPrefix(v.Banner, "Actions are off: "+why) {
			t.Errorf("/%s: the banner says %q, want %q...", page, v.Banner, why)
		}
		for i, off := range v.Off {
			if !off || !strings.HasPrefix(v.Titles[i], why) {
				t.Errorf("/%s: button %d: disabled %v, title %q", page, i, off, v.Titles[i])
			}
		}
		if page != "instance?service=demo&id=demo-1" && !v.Roll {
			t.Errorf("/%s: the rolling restart is enabled", page)
		}
		t.Logf("/%s: %d buttons disabled, titled %q", page, len(v.Off), v.Titles[0])
	}
}
