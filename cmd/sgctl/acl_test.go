package main

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// roleURL creates a user of role's line in docs/redis-acl.md (read from the
// document) on srv and returns its REDIS_URL.
func roleURL(t *testing.T, srv *redistest.Srv, role redisacl.Role) string {
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
	pw := "pw-" + string(role)
	if err := redisacl.SetUser(t.Context(), srv.Client(t), string(role), pw, l.Rules()); err != nil {
		t.Fatal(err)
	}
	return "redis://" + url.UserPassword(string(role), pw).String() + "@" + srv.Addr() + "/0"
}

// As the sg-reader user sgctl ps lists the fleet and watch follows it;
// sgctl restart exits 1 naming the command and key Redis refused and the
// role to use, and nothing is restarted. The same restart as sg-operator
// runs to its end.
func TestSgctlAsTheSgReaderUser(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a demo process against a real redis-server")
	}
	srv := redistest.Server(t)
	demo := startDemo(t, "demo-1", srv.URL())
	reg := registry.New(srv.Client(t))
	eventually(t, 30*time.Second, func() bool {
		e, err := reg.Entry(t.Context(), "demo", "demo-1")
		return err == nil && e.Status == "running"
	}, func() string { return "demo-1 running: " + demo.Tail(10) })
	first, _ := reg.Entry(t.Context(), "demo", "demo-1")

	reader := map[string]string{"REDIS_URL": roleURL(t, srv, redisacl.Reader), "SG_CONTROL_KEY": testKey}
	if r := sgctl(t, t.Context(), reader, nil, "ps"); r.code != exitOK || !strings.Contains(r.stdout, "demo-1") || r.stderr != "" {
		t.Fatalf("sgctl ps as sg-reader: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := sgctl(t, t.Context(), reader, nil, "ps", "demo", "--json"); r.code != exitOK || !strings.Contains(r.stdout, `"demo-1"`) {
		t.Fatalf("sgctl ps --json as sg-reader: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// watch replays the stream and follows it until interrupted.
	var stdout, stderr syncBuffer
	wctx, stopWatch := context.WithCancel(t.Context())
	watched := make(chan int, 1)
	go func() {
		watched <- newTestApp(reader, nil, &stdout, &stderr).main(wctx, []string{"watch", "--from", "0"})
	}()
	eventually(t, 10*time.Second, func() bool { return strings.Contains(stdout.String(), "demo-1") },
		func() string { return "sgctl watch as sg-reader: " + stdout.String() + stderr.String() })
	stopWatch()
	if code := <-watched; code != exitOK || stderr.String() != "" {
		t.Fatalf("sgctl watch as sg-reader: exit %d\n%s", code, stderr.String())
	}

	r := sgctl(t, t.Context(), reader, nil, "restart", "demo", "--wait", "--timeout", "10s")
	if r.code != exitFailed {
		t.Fatalf("sgctl restart as sg-reader: exit %d, want %d", r.code, exitFailed)
	}
	for _, want := range []string{
		"sgctl restart: sending to sg:control:{demo}: ",
		"this Redis user cannot send control ops (XADD to sg:control:{demo} refused): use the sg-operator role: ",
		"NOPERM this user has no permissions to run the 'xadd' command: the sg-operator role needs +xadd (docs/redis-acl.md)",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("sgctl restart as sg-reader: stderr does not say %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "pw-sg-reader") {
		t.Errorf("the password is in the output")
	}
	if e, err := reg.Entry(t.Context(), "demo", "demo-1"); err != nil || !e.StartedAt.Equal(first.StartedAt) {
		t.Errorf("demo-1 after the refused restart: %+v %v", e, err)
	}

	operator := map[string]string{"REDIS_URL": roleURL(t, srv, redisacl.Operator), "SG_CONTROL_KEY": testKey}
	if r := sgctl(t, t.Context(), operator, nil, "restart", "demo", "--max-unavailable", "1", "--wait", "--timeout", "30s"); r.code != exitOK {
		t.Fatalf("sgctl restart as sg-operator: %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if e, err := reg.Entry(t.Context(), "demo", "demo-1"); err != nil || !e.StartedAt.After(first.StartedAt) {
		t.Errorf("demo-1 after the restart as sg-operator: %+v %v", e, err)
	}
	if log := srv.Client(t).Do(t.Context(), "ACL", "LOG").Val(); log != nil {
		var refused []any
		for _, e := range log.([]any) {
			if m, _ := e.(map[any]any); m["username"] != string(redisacl.Reader) || m["object"] != "xadd" {
				refused = append(refused, m)
			}
		}
		if len(refused) > 0 {
			t.Errorf("Redis refused more than the reader's XADD: %v", refused)
		}
	}
}
