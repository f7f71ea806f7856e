package registry_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// userClient creates user on srv with the rules of role's line less those
// in without, and returns a client of it.
func userClient(t *testing.T, srv *redistest.Srv, user string, role redisacl.Role, without ...string) *redis.Client {
	t.Helper()
	var rules []string
	for _, r := range redisacl.Rules(role) {
		if !strings.Contains(strings.Join(without, "\x00")+"\x00", r+"\x00") {
			rules = append(rules, r)
		}
	}
	if err := redisacl.SetUser(t.Context(), srv.Client(t), user, "pw", rules); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: user, Password: "pw"})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// The sg-reader role is read-only: a listing writes nothing (before, it
// trimmed expired index members), so a reader lists, reads entries and
// events, and watches.
func TestAReadOnlyUserListsReadsAndWatches(t *testing.T) {
	srv := redistest.Server(t)
	ctx := t.Context()
	if err := registry.New(srv.Client(t)).Register(ctx, registry.Entry{Service: "api", Instance: "i1", Status: "running", Addr: "127.0.0.1:9"}); err != nil {
		t.Fatal(err)
	}
	r := registry.New(userClient(t, srv, "reader", redisacl.Reader))
	if got, err := r.List(ctx, "api"); err != nil || len(got) != 1 {
		t.Fatalf("List as sg-reader = %+v, %v", got, err)
	}
	if _, err := r.Services(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Entry(ctx, "api", "i1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Events(ctx, "$", 0, 0); err != nil {
		t.Fatal(err)
	}
	w, err := r.Watch("api")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w.WaitSynced(wctx); err != nil || len(w.Running()) != 1 {
		t.Fatalf("the watcher of a sg-reader: %v, running %v", err, w.Running())
	}
}

// A refused call names the key and the role's rule: Redis names neither.
func TestARefusedCallNamesTheRoleAndTheRule(t *testing.T) {
	srv := redistest.Server(t)
	ctx := t.Context()

	// A reader without its registry pattern.
	r := registry.New(userClient(t, srv, "blind", redisacl.Reader, "%R~sg:registry:*"))
	_, err := r.List(ctx, "api")
	if !errors.Is(err, registry.ErrNoPermission) || !strings.Contains(err.Error(), "sg:registry:index:{api}") ||
		!strings.HasSuffix(err.Error(), "the sg-reader role needs %R~sg:registry:* (docs/redis-acl.md)") {
		t.Errorf("List: %v", err)
	}

	// An instance that may write its entry but not sg:events: Register
	// delivers the events queued before it and reports the refusal.
	inst := registry.New(userClient(t, srv, "mute", redisacl.Instance, "%W~sg:events"), registry.WithRetryBackoff(time.Second, time.Second))
	m, err := inst.Member(registry.Entry{Service: "api", Instance: "i2", Status: "init"})
	if err != nil {
		t.Fatal(err)
	}
	defer closeMember(m)
	m.Update(registry.Entry{Status: "connecting"}, &registry.Event{Event: "connect", From: "init", To: "connecting"})
	err = m.Register(ctx, registry.Entry{Status: "registering"})
	if !errors.Is(err, registry.ErrNoPermission) || !strings.Contains(err.Error(), "XADD sg:events") ||
		!strings.HasSuffix(err.Error(), "the sg-instance role needs %W~sg:events (docs/redis-acl.md)") {
		t.Errorf("Register: %v", err)
	}
	if f := m.Failing(); !errors.Is(f, registry.ErrNoPermission) {
		t.Errorf("Failing = %v, want the refusal", f)
	}

	// An instance without a command its entry script runs: Redis 7.0 names
	// only the script's line.
	inst = registry.New(userClient(t, srv, "notrim", redisacl.Instance, "+zremrangebyscore"))
	m2, err := inst.Member(registry.Entry{Service: "api", Instance: "i3", Status: "init"})
	if err != nil {
		t.Fatal(err)
	}
	defer closeMember(m2)
	err = m2.Register(ctx, registry.Entry{Status: "registering"})
	if !errors.Is(err, registry.ErrNoPermission) || !strings.HasSuffix(err.Error(), "the sg-instance role needs +zremrangebyscore (docs/redis-acl.md)") {
		t.Errorf("Register without +zremrangebyscore: %v", err)
	}
}

// closeMember closes m, giving up on what Redis refuses within a second.
func closeMember(m *registry.Member) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = m.Close(ctx)
}
