package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/registry"
)

// Names come from keys: an entry under one key whose JSON names another
// instance, or none, is not listed, planned for or shown. The security
// review's entry was under sg:registry:service:{evil}:decoy-2 and said
// service "demo", instance "".

// forgeEntry writes, with raw commands, an entry under the key of
// service/instance whose JSON says jsonService/jsonInstance, running, with
// the host "forged".
func forgeEntry(t *testing.T, mr *miniredis.Miniredis, service, instance, jsonService, jsonInstance string) {
	t.Helper()
	b, err := json.Marshal(registry.Entry{Service: jsonService, Instance: jsonInstance, Status: "running", Host: "forged",
		PID: 666, Control: "signed", StartedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	rawEntry(t, mr, service, instance, string(b))
}

func TestPsSkipsEntriesWhoseJSONNamesAreNotTheirKeys(t *testing.T) {
	f := newFleet(t, 30*time.Second, demoEntries(time.Now())...)
	forgeEntry(t, f.mr, "evil", "decoy-2", "demo", "")
	forgeEntry(t, f.mr, "demo", "ghost", "demo", "demo-a")
	forgeEntry(t, f.mr, "demo", "anon", "", "")
	for _, args := range [][]string{{"ps"}, {"ps", "--json"}, {"ps", "evil"}} {
		r := sgctl(t, t.Context(), f.env, nil, args...)
		if r.code != exitOK {
			t.Fatalf("%v: exit code %d, want 0", args, r.code)
		}
		var listed []string
		if args[len(args)-1] == "--json" {
			var entries []registry.Entry
			if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil {
				t.Fatalf("--json: %v\n%s", err, r.stdout)
			}
			for _, e := range entries {
				listed = append(listed, e.Service+"/"+e.Instance+"@"+e.Host)
			}
		} else if r.stdout != "" {
			for _, row := range rows(r.stdout)[1:] {
				listed = append(listed, row[0]+"/"+row[1]+"@"+row[4])
			}
		}
		want := "[api/api-1@h3 demo/demo-a@h1 demo/demo-b@h2]"
		if args[len(args)-1] == "evil" {
			want = "[]"
		}
		if fmt.Sprint(listed) != want {
			t.Errorf("%v: listed %v, want %s", args, listed, want)
		}
		keys := []string{"sg:registry:service:{demo}:ghost", "sg:registry:service:{demo}:anon", "sg:registry:service:{evil}:decoy-2"}
		if args[len(args)-1] == "evil" {
			keys = keys[2:]
		}
		for _, key := range keys {
			if n := strings.Count(r.stderr, "key="+key); n != 1 {
				t.Errorf("%v: %d warnings naming %s, want 1:\n%s", args, n, key, r.stderr)
			}
		}
	}
}

// The op commands plan from the same listing: a forged entry adds no
// instance to wait for, and a service with only forged entries gets no op.
func TestOpPlanningIgnoresEntriesWhoseJSONNamesAreNotTheirKeys(t *testing.T) {
	mr := miniredis.RunT(t)
	rs := startResponder(t, mr, "demo", runningDemo(2), func(controlops.Op, registry.Entry) ([]controlops.Status, []string, *registry.Entry) {
		return []controlops.Status{controlops.StatusDone}, nil, nil
	})
	forgeEntry(t, mr, "demo", "ghost", "demo", "")
	forgeEntry(t, mr, "demo", "ghost-2", "demo", "demo-1")
	forgeEntry(t, mr, "evil", "decoy-2", "demo", "")
	env := map[string]string{"REDIS_URL": "redis://" + mr.Addr(), "SG_CONTROL_KEY": testKey}

	r := sgctl(t, t.Context(), env, nil, "pull", "demo", "--json")
	if r.code != exitOK {
		t.Fatalf("pull demo: exit code %d, want 0", r.code)
	}
	var sent struct {
		Instances []string `json:"instances"`
		Target    string   `json:"target"`
	}
	if err := json.Unmarshal([]byte(strings.SplitN(r.stdout, "\n", 2)[0]), &sent); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sent.Instances) != "[demo-1 demo-2]" || sent.Target != controlops.TargetAll {
		t.Errorf("pull demo planned %q (target %s), want demo-1 and demo-2", sent.Instances, sent.Target)
	}
	for _, key := range []string{"sg:registry:service:{demo}:ghost", "sg:registry:service:{demo}:ghost-2"} {
		if !strings.Contains(r.stderr, "key="+key) {
			t.Errorf("pull demo: no warning naming %s:\n%s", key, r.stderr)
		}
	}
	eventually(t, 5*time.Second, func() bool { return len(rs.sent()) == 1 }, func() string { return "the pull read by the responder" })

	// evil has only the forged entry: nothing to send.
	r = sgctl(t, t.Context(), env, nil, "restart", "evil")
	if r.code != exitFailed || !strings.Contains(r.stderr, `service "evil" has no live instances`) {
		t.Errorf("restart evil: exit code %d, stderr %q; want 1, no live instances", r.code, r.stderr)
	}
	for _, svc := range []string{"evil", "demo"} {
		if n := streamLen(t, mr, controlops.StreamKey(svc)); n != map[string]int{"evil": 0, "demo": 1}[svc] {
			t.Errorf("%s holds %d ops after the restart of evil", controlops.StreamKey(svc), n)
		}
	}
}

func streamLen(t *testing.T, mr *miniredis.Miniredis, key string) int {
	t.Helper()
	if !mr.Exists(key) {
		return 0
	}
	es, err := mr.Stream(key)
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// sg:events has no keys per instance: an event whose service or instance
// cannot be a name was not written by an instance, and is not shown.
func TestWatchSkipsEventsWhoseNamesCannotBeNames(t *testing.T) {
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	xadd := func(service, instance, to string) {
		t.Helper()
		if err := c.XAdd(t.Context(), &redis.XAddArgs{Stream: registry.EventsKey, Values: map[string]any{
			"service": service, "instance": instance, "event": "pull", "from": "running", "to": to,
			"time": time.Now().UTC().Format(time.RFC3339Nano),
		}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	xadd("demo", "", "forged-1")
	xadd("", "", "forged-2")
	xadd("demo", "*", "forged-3")
	xadd("de{mo}", "demo-1", "forged-4")
	xadd("demo", "demo-1", "pulling")
	env := map[string]string{"REDIS_URL": "redis://" + mr.Addr()}
	for _, args := range [][]string{{"--from", "0"}, {"--from", "0", "--json"}, {"demo", "--from", "0"}} {
		w := startWatch(t, env, args...)
		w.waitFor("pulling")
		if code := w.stop(); code != exitOK {
			t.Fatalf("%v: exit code %d", args, code)
		}
		if out := w.stdout.String(); strings.Contains(out, "forged") {
			t.Errorf("%v: an event with no valid names was shown:\n%s", args, out)
		}
		if n := strings.Count(w.stderr.String(), "warning: skipping an event whose service or instance cannot be a name"); n != 1 {
			t.Errorf("%v: %d warnings, want 1 (once a minute):\n%s", args, n, w.stderr)
		}
	}
}

// Bidi overrides reorder what a terminal shows: "evil\u202egnp.exe" reads as
// "evilexe.png". ps escapes them in its table and, as \u escapes that stay
// valid JSON, in --json.
func TestPsEscapesBidiOverridesInTextAndJSON(t *testing.T) {
	const host = "evil\u202egnp.exe"
	const version = "v1\u2066\u200b\u2069"
	f := newFleet(t, 30*time.Second, registry.Entry{Service: "demo", Instance: "demo-1", Status: "running",
		Host: host, Version: version, PID: 1, StartedAt: time.Now()})
	hidden := []string{"\u202e", "\u2066", "\u200b", "\u2069"}

	r := sgctl(t, t.Context(), f.env, nil, "ps")
	for _, h := range hidden {
		if strings.Contains(r.stdout, h) {
			t.Errorf("the table holds %U raw:\n%s", []rune(h)[0], r.stdout)
		}
	}
	if !strings.Contains(r.stdout, `evil\u202egnp.exe`) {
		t.Errorf("the table does not show the override escaped:\n%s", r.stdout)
	}

	r = sgctl(t, t.Context(), f.env, nil, "ps", "--json")
	for _, h := range hidden {
		if strings.Contains(r.stdout, h) {
			t.Errorf("--json holds %U raw:\n%s", []rune(h)[0], r.stdout)
		}
	}
	for _, want := range []string{`"host": "evil\u202egnp.exe"`, `"version": "v1\u2066\u200b\u2069"`} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--json lacks %s:\n%s", want, r.stdout)
		}
	}
	var got []registry.Entry
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got) != 1 {
		t.Fatalf("--json is not a JSON array of one entry: %v\n%s", err, r.stdout)
	}
	if got[0].Host != host || got[0].Version != version {
		t.Errorf("--json changed the values: %q %q", got[0].Host, got[0].Version)
	}
}
