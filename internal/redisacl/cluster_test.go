package redisacl_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
	"github.com/stargazer/lifecycle/service"
)

// clusterRules returns the rules the document adds to role's line on a
// Redis Cluster.
func clusterRules(t testing.TB, lines []redisacl.Line, role redisacl.Role) []string {
	t.Helper()
	for _, l := range redisacl.Additions(lines, string(role)) {
		if slices.Contains(l.Rules(), "+cluster|slots") {
			return l.Rules()
		}
	}
	t.Fatalf("the document adds no +cluster|slots to %s", role)
	return nil
}

// On a Redis Cluster each role needs its line and the document's cluster
// addition (CLUSTER SLOTS for the clients' slot map, COMMAND for their
// routing), and nothing more: an instance boots, is pulled and stops, a
// reader lists and watches, an operator sends and follows an op, and no
// node's ACL LOG has a refusal then. Without the addition an instance's
// boot fails naming +cluster|slots.
func TestOnARedisClusterEachRoleNeedsItsLineAndTheClusterAddition(t *testing.T) {
	if testing.Short() {
		t.Skip("a real Redis Cluster")
	}
	lines := docLines(t)
	cl := redistest.Cluster(t)
	for _, n := range cl.Nodes() {
		admin := n.Client(t)
		for _, role := range redisacl.Roles {
			setUser(t, admin, string(role), "pw", roleRules(t, lines, role), clusterRules(t, lines, role))
		}
		setUser(t, admin, "bare-instance", "pw", roleRules(t, lines, redisacl.Instance))
	}
	client := func(user string) *redis.ClusterClient {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), Username: user, Password: "pw", ContextTimeoutEnabled: true})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	ctx := context.Background()
	newInstance := func(rdb redis.UniversalClient, log *logs) *service.Instance {
		in, err := service.New(waitingService{}, service.WithRedis(rdb), service.WithServiceName("c"), service.WithInstanceID("i1"),
			service.WithBootJitter(0), service.WithServiceTTL(3*time.Second), service.WithoutHealthServer(),
			service.WithControlKeys(bootKey), service.WithPullHandler(func(context.Context, json.RawMessage) error { return nil }),
			service.WithTracerProvider(tracenoop.NewTracerProvider()), service.WithMeterProvider(noop.NewMeterProvider()),
			service.WithLogger(slog.New(slog.NewTextHandler(log, nil))))
		if err != nil {
			t.Fatal(err)
		}
		return in
	}

	bare := newInstance(client("bare-instance"), &logs{})
	if err := bare.Boot(ctx); err == nil || !strings.Contains(err.Error(), "+cluster|slots") {
		t.Fatalf("Boot without the cluster addition = %v, want it to fail naming +cluster|slots", err)
	} else {
		t.Logf("without the cluster addition: %v", err)
	}

	log := &logs{}
	in := newInstance(client(string(redisacl.Instance)), log)
	if err := in.Boot(ctx); err != nil {
		t.Fatalf("Boot as sg-instance on a cluster: %v\n%s", err, log.String())
	}
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()

	reg := registry.New(client(string(redisacl.Reader)))
	if ins, err := reg.List(ctx, "c"); err != nil || len(ins) != 1 {
		t.Fatalf("List as sg-reader: %+v, %v", ins, err)
	}
	w, err := reg.Watch("c")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w.WaitSynced(wctx); err != nil || len(w.Running()) != 1 {
		t.Fatalf("Watcher as sg-reader: %v, %v", err, w.Running())
	}
	_ = w.Close()

	op := controlops.NewClient(client(string(redisacl.Operator)), bootKey)
	if err := op.CheckPermission(ctx, "c"); err != nil {
		t.Fatalf("CheckPermission as sg-operator: %v", err)
	}
	sent, err := op.Send(ctx, "c", controlops.OpPull, "i1", nil)
	if err != nil {
		t.Fatal(err)
	}
	final, err := op.Wait(wctx, "c", sent, []string{"i1"}, nil)
	if err != nil || final["i1"].Status != controlops.StatusDone {
		t.Fatalf("pull as sg-operator: %+v, %v\n%s", final, err, log.String())
	}

	sctx, scancel := context.WithTimeout(ctx, 10*time.Second)
	defer scancel()
	if err := in.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
	<-done
	if n, err := cl.Client(t).Exists(ctx, registry.EntryKey("c", "i1")).Result(); err != nil || n != 0 {
		t.Errorf("the entry is still there after the stop: %d %v", n, err)
	}

	for _, n := range cl.Nodes() {
		v, err := n.Client(t).Do(ctx, "ACL", "LOG").Slice()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range v {
			m, _ := e.(map[any]any)
			line := fmt.Sprintf("%v %v refused %v %v (count %v)", n.Addr(), m["username"], m["reason"], m["object"], m["count"])
			if m["username"] == "bare-instance" {
				t.Logf("ACL LOG: %s", line)
				continue
			}
			t.Errorf("ACL LOG: %s", line)
		}
	}
}
