package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// aclPassword holds characters a URL must escape: it must reach Redis
// whole, and never the output.
const aclPassword = "acl-p@ss/w:rd#1"

// docRules returns the rules of role's line in docs/redis-acl.md and, for
// sg-instance, the document's rule for the demo's own counter.
func docRules(t *testing.T, role redisacl.Role) []string {
	t.Helper()
	path, err := redisacl.FindDoc()
	if err != nil {
		t.Fatal(err)
	}
	lines, err := redisacl.ReadDoc(path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := redisacl.RoleLine(lines, role)
	if err != nil {
		t.Fatal(err)
	}
	rules := l.Rules()
	if role == redisacl.Instance {
		for _, add := range redisacl.Additions(lines, string(role)) {
			if slices.ContainsFunc(add.Rules(), func(r string) bool { return strings.HasPrefix(r, "~demo:") }) {
				rules = append(rules, add.Rules()...)
			}
		}
	}
	return rules
}

// userURL creates user with rules on srv and returns its REDIS_URL.
func userURL(t *testing.T, srv *redistest.Srv, user string, rules []string) string {
	t.Helper()
	if err := redisacl.SetUser(t.Context(), srv.Client(t), user, aclPassword, rules); err != nil {
		t.Fatal(err)
	}
	return "redis://" + url.UserPassword(user, aclPassword).String() + "@" + srv.Addr() + "/0"
}

// aclLog returns the refusals Redis logged.
func aclLog(t *testing.T, rdb *redis.Client) []string {
	t.Helper()
	v, err := rdb.Do(t.Context(), "ACL", "LOG").Slice()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range v {
		m, _ := e.(map[any]any)
		out = append(out, fmt.Sprintf("%v refused %v %v (count %v)", m["username"], m["reason"], m["object"], m["count"]))
	}
	return out
}

// The demo with REDIS_URL naming the sg-instance user of docs/redis-acl.md
// (and the demo's own rule) does everything a lifecycle process does:
// boots, heartbeats, runs a signed pull and a signed restart (a new process
// by exec), and stops on SIGTERM with exit 0 and its entry removed; Redis
// refused nothing, and the password is in no line of its output.
func TestDemoAsTheSgInstanceUser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a demo process against a real redis-server")
	}
	srv := redistest.Server(t)
	admin := srv.Client(t)
	p := startDemo(t, "REDIS_URL="+userURL(t, srv, string(redisacl.Instance), docRules(t, redisacl.Instance)),
		"SG_SERVICE_NAME=demo", "SG_INSTANCE_ID=acl-1", "SG_HEALTH_HOST=127.0.0.1", "SG_SERVICE_TTL=3s", "SG_CONTROL_KEY="+newKey)
	reg := registry.New(admin)
	first := runningEntry(t, p, reg, "acl-1")

	// A heartbeat: the index score (the entry's expiry) moves on.
	ins, err := reg.List(t.Context(), "demo")
	if err != nil || len(ins) != 1 {
		t.Fatalf("List: %+v %v", ins, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		now, err := reg.List(t.Context(), "demo")
		if err == nil && len(now) == 1 && now[0].Expires.After(ins[0].Expires) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat within 10s: %+v %v", now, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, bounded by the deadline
	}

	c := controlops.NewClient(admin, []byte(newKey))
	for _, op := range []string{controlops.OpPull, controlops.OpRestart} {
		sent, err := c.Send(t.Context(), "demo", op, "acl-1", nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		final, err := c.Wait(ctx, "demo", sent, []string{"acl-1"}, nil)
		cancel()
		if err != nil || final["acl-1"].Status != controlops.StatusDone {
			t.Fatalf("%s: %+v %v", op, final, err)
		}
	}
	again := runningEntry(t, p, reg, "acl-1")
	if !again.StartedAt.After(first.StartedAt) {
		t.Errorf("the restart made no new process: started_at %v, then %v", first.StartedAt, again.StartedAt)
	}

	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(t); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if _, err := reg.Entry(t.Context(), "demo", "acl-1"); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("the entry after the stop: %v, want it removed", err)
	}
	out := p.Output()
	for _, bad := range []string{"NOPERM", "can't run this command", aclPassword, url.QueryEscape(aclPassword), "p@ss", "p%40ss"} {
		if strings.Contains(out, bad) {
			t.Errorf("the demo's output holds %q", bad)
		}
	}
	if log := aclLog(t, admin); len(log) > 0 {
		t.Errorf("Redis refused the demo: %q", log)
	}
}

// A demo whose user lacks one rule a boot needs exits 1, naming the rule:
// a key pattern (Redis names no key) and a command of the control-ops
// daemon. Every rule is covered in-process by
// TestAnInstanceWithoutOneRuleFailsWhereItIsNeededNamingIt (internal/redisacl).
func TestDemoWithoutARuleItsBootNeedsExitsOneNamingIt(t *testing.T) {
	if testing.Short() {
		t.Skip("runs demo processes against a real redis-server")
	}
	srv := redistest.Server(t)
	for i, missing := range []string{"~sg:registry:*", "+xread"} {
		rules := slices.DeleteFunc(docRules(t, redisacl.Instance), func(r string) bool { return r == missing })
		p := startDemo(t, "REDIS_URL="+userURL(t, srv, fmt.Sprintf("without-%d", i), rules),
			"SG_SERVICE_NAME=demo", fmt.Sprintf("SG_INSTANCE_ID=acl-%d", i), "SG_HEALTH_HOST=127.0.0.1", "SG_CONTROL_KEY="+newKey)
		if code := p.Wait(t); code != 1 {
			t.Fatalf("without %s: exit code %d, want 1", missing, code)
		}
		want := "the sg-instance role needs " + missing + " (docs/redis-acl.md)"
		if out := p.Output(); !strings.Contains(out, want) {
			t.Errorf("without %s: the output does not say %q:\n%s", missing, want, p.Tail(20))
		}
		for _, l := range strings.Split(p.Output(), "\n") {
			if strings.Contains(l, "instance failed") {
				t.Logf("without %s: %s", missing, l)
			}
		}
		if strings.Contains(p.Output(), aclPassword) {
			t.Errorf("the output holds the password")
		}
	}
}
