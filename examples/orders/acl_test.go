package main

import (
	"context"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/redistest"
)

// The rules the service's own work needs beside the sg-instance role's, as
// README.md gives them: it shares the instance's client, so its Redis user.
var ordersRules = []string{"+xgroup|create", "+xreadgroup", "+xack", "+xrange", "+hget", "+multi", "+exec", "~orders:*"}

// Under the least-privilege sg-instance role (docs/redis-acl.md) the boot
// fails at phase 7 naming the first command the service may not send; with
// the README's rules added to the user an order goes through.
func TestUnderTheInstanceRoleTheServiceNeedsTheRulesItsReadmeGives(t *testing.T) {
	if testing.Short() {
		t.Skip("real redis-server")
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if line := "ACL SETUSER sg-instance " + strings.Join(ordersRules, " "); !strings.Contains(string(readme), line) {
		t.Fatalf("README.md lacks the line the test uses:\n%s", line)
	}
	srv := redistest.Server(t)
	admin := srv.Client(t)
	ctx := context.Background()
	url := "REDIS_URL=redis://sg-instance:pw@" + srv.Addr() + "/0"
	if err := redisacl.SetUser(ctx, admin, "sg-instance", "pw", redisacl.Rules(redisacl.Instance)); err != nil {
		t.Fatal(err)
	}
	p := start(t, url)
	if code := p.Wait(t); code != 1 {
		t.Fatalf("the role alone: exit code %d, want 1", code)
	}
	if out := p.Output(); !strings.Contains(out, "phase starting: Service.OnStart: creating consumer group workers on "+streamKey+": NOPERM") ||
		!strings.Contains(out, "'xgroup|create'") {
		t.Errorf("the role alone: the failure does not name the command refused:\n%s", out)
	}

	if err := redisacl.SetUser(ctx, admin, "sg-instance", "pw", redisacl.Rules(redisacl.Instance), ordersRules); err != nil {
		t.Fatal(err)
	}
	q := start(t, url)
	base := "http://" + q.WaitForMatch(t, listening)[1]
	code, body := call(t, "POST", base+"/orders", `{"item":"tea","qty":2}`)
	if code != http.StatusAccepted {
		t.Fatalf("POST /orders: %d %v", code, body)
	}
	poll(t, 20*time.Second, "the order processed", func() bool {
		_, b := call(t, "GET", base+"/orders/"+body["id"], "")
		return b["status"] == "processed"
	})
	_ = q.Signal(syscall.SIGTERM)
	if code := q.Wait(t); code != 0 {
		t.Fatalf("with the README's rules: exit code %d, want 0", code)
	}
	if out := q.Output(); strings.Contains(out, "NOPERM") {
		t.Errorf("with the README's rules, a refusal:\n%s", out)
	}
}
