package dashboard

import (
	"encoding/json"
	"html"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/redistest"
)

// roleRig is a dashboard whose Redis user has the rules of role's line in
// docs/redis-acl.md (read from the document), over a real redis-server
// holding one running instance of demo.
func roleRig(t *testing.T, role redisacl.Role, readOnly bool) *rig {
	t.Helper()
	path, err := redisacl.FindDoc()
	if err != nil {
		t.Fatal(err)
	}
	lines, err := redisacl.ReadDoc(path)
	if err != nil {
		t.Fatal(err)
	}
	line, err := redisacl.RoleLine(lines, role)
	if err != nil {
		t.Fatal(err)
	}
	srv := redistest.Server(t)
	admin := srv.Client(t)
	if err := redisacl.SetUser(t.Context(), admin, string(role), "pw", line.Rules()); err != nil {
		t.Fatal(err)
	}
	put(t, admin, entry("demo", "demo-1", "running"))
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: string(role), Password: "pw"})
	t.Cleanup(func() { _ = rdb.Close() })
	return newRig(t, rdb, func(c *Config) { c.ControlKey, c.ReadOnly = []byte(testControlKey), readOnly })
}

// pageDenied reads the page's config script: the reasons app.js gives the
// disabled buttons.
func pageDenied(t *testing.T, page string) map[string]string {
	t.Helper()
	m := regexp.MustCompile(`(?s)<script type="application/json" id="config">(.*?)</script>`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no config in the page:\n%s", page)
	}
	var cfg pageConfig
	if err := json.Unmarshal([]byte(m[1]), &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.Denied
}

const readerDenied = "this Redis user cannot send control ops (XADD to sg:control:{demo} refused): use the sg-operator role: " +
	"NOPERM this user has no permissions to run the 'xadd' command: the sg-operator role needs +xadd (docs/redis-acl.md)"

// With a sg-reader user the dashboard shows the fleet, and finds out by
// itself (a check that sends nothing) that it cannot send ops: every page
// says why, the rolling restart is disabled, app.js disables the buttons
// with the reason as their title, and a POST is refused without a send.
func TestADashboardOfAReaderShowsTheFleetAndDisablesItsActionsSayingWhy(t *testing.T) {
	r := roleRig(t, redisacl.Reader, false)
	for _, path := range []string{"/", "/service?name=demo", "/instance?service=demo&id=demo-1"} {
		res := r.get(t, path)
		if res.code != http.StatusOK {
			t.Fatalf("GET %s: %d\n%s", path, res.code, res.body)
		}
		page := html.UnescapeString(res.body)
		if !strings.Contains(page, "demo-1") {
			t.Errorf("GET %s does not show demo-1", path)
		}
		if !strings.Contains(page, `<p class="warn denied">Actions are off: `+readerDenied+`</p>`) {
			t.Errorf("GET %s does not say why the actions are off:\n%s", path, res.body)
		}
		if got := pageDenied(t, res.body)["demo"]; got != readerDenied {
			t.Errorf("GET %s: config's denied[demo] = %q, want %q", path, got, readerDenied)
		}
		if path != "/instance?service=demo&id=demo-1" && !regexp.MustCompile(`<button type="submit" class="danger" disabled title="[^"]+">Rolling restart</button>`).MatchString(res.body) {
			t.Errorf("GET %s: the rolling restart is not disabled", path)
		}
	}
	var fleet struct {
		Services []service `json:"services"`
	}
	if err := json.Unmarshal([]byte(r.get(t, "/api/fleet").body), &fleet); err != nil || len(fleet.Services) != 1 || fleet.Services[0].Denied != readerDenied {
		t.Errorf("/api/fleet: %+v %v", fleet, err)
	}
	res := r.post(t, "/api/op", "application/json", `{"service":"demo","instance":"demo-1","op":"pull"}`)
	if res.code != http.StatusForbidden || !strings.Contains(res.body, readerDenied) {
		t.Errorf("POST /api/op as sg-reader: %d %q, want 403 saying why", res.code, res.body)
	}
}

// With a sg-operator user nothing is disabled; with --read-only nothing is
// checked (there are no actions).
func TestADashboardOfAnOperatorOrReadOnlySaysNothingOfPermissions(t *testing.T) {
	for _, c := range []struct {
		role     redisacl.Role
		readOnly bool
	}{{redisacl.Operator, false}, {redisacl.Reader, true}} {
		r := roleRig(t, c.role, c.readOnly)
		res := r.get(t, "/")
		if res.code != http.StatusOK || strings.Contains(res.body, "Actions are off") || len(pageDenied(t, res.body)) != 0 {
			t.Errorf("%s (read-only %v): %d\n%s", c.role, c.readOnly, res.code, res.body)
		}
		r.srv.perms.mu.Lock()
		_, checked := r.srv.perms.m["demo"]
		r.srv.perms.mu.Unlock()
		if c.readOnly && checked {
			t.Errorf("a read-only dashboard checked its permissions")
		}
	}
}
