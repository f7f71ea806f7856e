package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/registry"
)

// forge writes with raw commands an entry under the key of
// service/instance whose JSON is e, indexed under service: the security
// review's forged row.
func forge(t *testing.T, rdb redis.UniversalClient, service, instance string, e registry.Entry) {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rdb.Set(ctx, registry.EntryKey(service, instance), b, time.Minute)
	rdb.ZAdd(ctx, registry.IndexKey(service), redis.Z{Score: float64(time.Now().Add(time.Minute).UnixMilli()), Member: instance})
	rdb.SAdd(ctx, registry.ServicesKey, service)
}

// The review: an entry under sg:registry:service:{evil}:decoy-2 saying
// service "demo", instance "" showed on /service?name=evil as demo/?, and
// its Restart button sent a signed restart with target "*": every demo
// instance restarted at once. Names come from keys: the row is not listed,
// and no request without a valid instance sends an op.
func TestTheReviewsForgedRowIsNotListedAndNoOpForItIsSent(t *testing.T) {
	// OpLimit bounds an op sent by mistake: the old code sent one for
	// evil's "" instance, and followed it for the default 5 minutes.
	r, _ := miniRig(t, func(c *Config) { c.ControlKey, c.OpLimit = []byte(testControlKey), 10*time.Second })
	startMember(t, r, entry("demo", "demo-1", "running"))
	startMember(t, r, entry("demo", "demo-2", "running"))
	forge(t, r.rdb, "evil", "decoy-2", entry("demo", "", "running"))
	forge(t, r.rdb, "demo", "ghost", entry("demo", "demo-1", "running"))

	page := r.get(t, "/service?name=evil").body
	if n := strings.Count(page, `<tr class="inst`); n != 0 || !strings.Contains(page, "0 instances") {
		t.Errorf("/service?name=evil lists %d rows, want none:\n%s", n, page)
	}
	fleet := r.get(t, "/").body
	if n := strings.Count(fleet, `<tr class="inst`); n != 2 || strings.Contains(fleet, `data-instance=""`) {
		t.Errorf("the fleet page lists %d rows, want demo-1 and demo-2 only", n)
	}
	var api struct {
		Services []service `json:"services"`
	}
	if err := json.Unmarshal([]byte(r.get(t, "/api/fleet").body), &api); err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, sv := range api.Services {
		for _, in := range sv.Instances {
			listed = append(listed, sv.Name+":"+in.Service+"/"+in.Instance+"@"+in.Host)
		}
	}
	if strings.Join(listed, " ") != "demo:demo/demo-1@h1 demo:demo/demo-2@h1" {
		t.Errorf("/api/fleet lists %q, want demo-1 and demo-2 under demo", listed)
	}

	for body, want := range map[string]string{
		`{"service":"evil","instance":"","op":"restart"}`:                      "instance: missing",
		`{"service":"demo","instance":"","op":"restart"}`:                      "instance: missing",
		`{"service":"demo","op":"drain"}`:                                      "instance: missing",
		`{"service":"demo","instance":"*","op":"restart"}`:                     `instance "*": registry: invalid name`,
		`{"service":"demo","instance":"demo-1:x","op":"pull"}`:                 `instance "demo-1:x": registry: invalid name`,
		`{"service":"demo","instance":"demo-1","op":"restart","rolling":true}`: "rolling: only a restart of every instance",
		`{"service":"demo","op":"pull","rolling":true}`:                        "rolling: only a restart of every instance",
		`{"service":"","instance":"demo-1","op":"pull"}`:                       `service "": registry: invalid name`,
	} {
		if res := r.post(t, "/api/op", "application/json", body); res.code != http.StatusBadRequest || !strings.Contains(res.body, want) {
			t.Errorf("POST /api/op %s = %d %q, want 400 with %q", body, res.code, res.body, want)
		}
	}
	// The forged row's own key: a valid id, but no entry of evil's.
	if res := r.post(t, "/api/op", "application/json", `{"service":"evil","instance":"decoy-2","op":"restart"}`); res.code != http.StatusConflict {
		t.Errorf("POST /api/op for evil/decoy-2 = %d %q, want 409: no live instance", res.code, res.body)
	}
	for _, svc := range []string{"demo", "evil"} {
		if n, err := r.rdb.XLen(context.Background(), "sg:control:{"+svc+"}").Result(); err != nil || n != 0 {
			t.Errorf("sg:control:{%s} holds %d ops (%v), want none", svc, n, err)
		}
	}

	// The rolling restart is the one action for a whole service: the
	// dashboard runs it, one op per instance (these members cannot restart,
	// so the first one's failure stops it).
	got := opLines(t, r, `{"service":"demo","op":"restart","rolling":true,"max_unavailable":1}`)
	if ro := got["rollout"]; len(ro) != 1 || fmt.Sprint(ro[0]["instances"]) != "[demo-1 demo-2]" {
		t.Errorf("the rolling restart was planned %v, want demo-1 and demo-2", ro)
	}
	for _, sent := range got["sent"] {
		if sent["target"] != sent["instance"] || sent["target"] == "*" {
			t.Errorf("the rolling restart sent %v, want an op to one instance", sent)
		}
	}
}

// The live updates follow the same rule: an event whose names cannot be
// names is not sent to browsers, and an entry that is not its key's is
// sent as none.
func TestLiveUpdatesLeaveOutEventsWithoutNamesAndEntriesNotTheirKeys(t *testing.T) {
	r, _ := miniRig(t, nil)
	put(t, r.rdb, entry("demo", "demo-1", "running"))
	forge(t, r.rdb, "demo", "ghost", entry("demo", "demo-1", "running"))
	msgs := r.srv.messages(t.Context(), []registry.Event{
		{ID: "1-1", Service: "demo", Instance: "", To: "running"},
		{ID: "1-2", Service: "", Instance: "", To: "running"},
		{ID: "1-3", Service: "demo", Instance: "ghost", To: "running"},
		{ID: "1-4", Service: "demo", Instance: "demo-1", To: "running"},
	})
	var ids []string
	for _, m := range msgs {
		ids = append(ids, m.id)
		var u update
		if err := json.Unmarshal(m.data, &u); err != nil {
			t.Fatal(err)
		}
		if (u.Entry != nil) != (m.id == "1-4") {
			t.Errorf("message %s carries entry %+v: want demo-1's only", m.id, u.Entry)
		}
	}
	if strings.Join(ids, " ") != "1-3 1-4" {
		t.Errorf("messages %v, want 1-3 and 1-4 (the events with names)", ids)
	}
}

// A 15 MB registry value made / 15.7 MB, re-fetched every 5 s as
// /api/fleet. Cells are cut at 128 characters, as sgctl ps cuts them; the
// instance page has the whole value, escaped. A value over what the
// registry's listing reads (registry.MaxEntryJSONLen, 64 KiB), as 15 MB is,
// is not listed at all: it is skipped unread, with a warning.
func TestA15MBValueIsCutAt128OnTheFleetPagesAndWholeOnTheInstancePage(t *testing.T) {
	r, _ := miniRig(t, nil)
	huge := "\u202e" + strings.Repeat("h", 15<<20)
	e := entry("demo", "demo-1", "running")
	e.Host = huge
	put(t, r.rdb, e)
	put(t, r.rdb, entry("demo", "demo-2", "running"))
	long := entry("demo", "demo-3", "running")
	long.Host = "\u202e" + strings.Repeat("h", 60<<10)
	put(t, r.rdb, long)
	const bound = 64 << 10
	cell := `\u202e` + strings.Repeat("h", 127) + "…"
	for _, path := range []string{"/", "/service?name=demo", "/api/fleet", "/api/fleet?service=demo"} {
		res := r.get(t, path)
		t.Logf("GET %s: %d bytes", path, len(res.body))
		if res.code != http.StatusOK || len(res.body) > bound {
			t.Errorf("GET %s = %d, %d bytes: want 200 and at most %d", path, res.code, len(res.body), bound)
		}
		if strings.HasPrefix(path, "/api") {
			cell = `\u202e` + strings.Repeat("h", 127) + "…" // JSON: cut, with JSON's escape (app.js cleans)
		}
		if !strings.Contains(res.body, cell) {
			t.Errorf("GET %s lacks the 60 KB host cut at 128 characters", path)
		}
		if strings.Contains(res.body, "demo-1") || !strings.Contains(res.body, "demo-2") {
			t.Errorf("GET %s: want demo-2 listed and demo-1, 15 MB, left out", path)
		}
	}
	msgs := r.srv.messages(t.Context(), []registry.Event{{ID: "1-1", Service: "demo", Instance: "demo-1", To: "running", Error: huge}})
	if len(msgs) != 1 || len(msgs[0].data) > bound {
		t.Errorf("the live update of demo-1 is %d bytes, want at most %d", len(msgs[0].data), bound)
	}

	res := r.get(t, "/instance?service=demo&id=demo-1")
	t.Logf("GET /instance: %d bytes", len(res.body))
	if res.code != http.StatusOK || strings.Contains(res.body, "\u202e") {
		t.Fatalf("GET /instance = %d, raw U+202E %v", res.code, strings.Contains(res.body, "\u202e"))
	}
	if !strings.Contains(res.body, `&#34;host&#34;: &#34;\u202e`+strings.Repeat("h", 15<<20)+`&#34;`) {
		t.Errorf("the instance page does not hold the whole host, escaped")
	}
}
