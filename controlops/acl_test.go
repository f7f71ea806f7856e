package controlops

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/redistest"
)

// aclClient creates user on srv with the rules of role's line less those in
// without, and returns a client of it.
func aclClient(t *testing.T, srv *redistest.Srv, user string, role redisacl.Role, without ...string) *redis.Client {
	t.Helper()
	rules := slices.DeleteFunc(redisacl.Rules(role), func(r string) bool { return slices.Contains(without, r) })
	if err := redisacl.SetUser(t.Context(), srv.Client(t), user, "pw", rules); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: user, Password: "pw"})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// A daemon that could not receive or answer an op fails its Start naming
// the rule, and runs all the same: it reads once the user has the rule.
func TestStartFailsNamingTheRuleWhenTheDaemonMayNotReadOrAnswer(t *testing.T) {
	srv := redistest.Server(t)
	for _, c := range []struct{ without, rule string }{
		{"+xread", "+xread"},
		{"%R~sg:control:{*}", "%R~sg:control:{*}"},
		{"%W~sg:control:results:*", "%W~sg:control:results:*"},
		{"+hgetall", "+hgetall"},
		{"+xrevrange", "+xrevrange"},
	} {
		t.Run(c.without, func(t *testing.T) {
			user := "no" + strings.Trim(c.without, "+%~*{}:")
			d, err := New(aclClient(t, srv, user, redisacl.Instance, c.without), newTarget("svc", "i1"), WithLogger(quiet), WithKeys(testKey))
			if err != nil {
				t.Fatal(err)
			}
			err = d.Start(t.Context())
			defer d.Stop(context.Background())
			if !errors.Is(err, ErrNoPermission) || !strings.HasSuffix(err.Error(), "the sg-instance role needs "+c.rule+" (docs/redis-acl.md)") {
				t.Fatalf("Start = %v, want ErrNoPermission naming %s", err, c.rule)
			}
		})
	}
}

// Probing the write of results writes nothing.
func TestTheStartProbeWritesNothing(t *testing.T) {
	srv := redistest.Server(t)
	admin := srv.Client(t)
	startDaemon(t, aclClient(t, srv, "inst", redisacl.Instance), newTarget("svc", "i1"), WithKeys(testKey))
	for _, k := range []string{ResultsKey("svc"), StreamKey("svc")} {
		if n, err := admin.Exists(t.Context(), k).Result(); err != nil || n != 0 {
			t.Errorf("%s exists after Start: %d, %v", k, n, err)
		}
	}
}

// An op whose nonce the instance may not claim, or a restart it may not
// hand over, is rejected with the rule in its reason: retrying cannot
// help until the user is given the rule, so later ops are read meanwhile.
func TestAnOpRedisRefusesIsRejectedNamingTheRule(t *testing.T) {
	srv := redistest.Server(t)
	admin := srv.Client(t)
	for _, c := range []struct {
		op, args, without, rule string
	}{
		{OpPull, "", "~sg:control:nonce:*", "~sg:control:nonce:*"},
		{OpRestart, "", "+hset", "+hset"},       // inside the hand-over script
		{OpRestart, "", "+pexpire", "+pexpire"}, // its second line
		{OpRestart, `{"max_unavailable":1}`, "~sg:control:slots:*", "~sg:control:slots:*"},
		{OpRestart, `{"max_unavailable":1}`, "+zcard", "+zcard"}, // inside the slot script
	} {
		t.Run(c.op+" without "+c.without, func(t *testing.T) {
			svc := "s" + strings.Trim(c.without, "+%~*{}:")
			svc = strings.ReplaceAll(svc, ":", "-")
			target := newTarget(svc, "i1")
			startDaemon(t, aclClient(t, srv, "u"+svc, redisacl.Instance, c.without), target, WithKeys(testKey))
			op := newOp(c.op, TargetAll, "nonce-"+svc, time.Now())
			op.Args = json.RawMessage(c.args)
			op = Sign(testKey, svc, op)
			xadd(t, admin, svc, op.Values())
			rs := waitResults(t, admin, svc, 1)
			if rs[0].Status != StatusRejected || !strings.Contains(rs[0].Reason, "the sg-instance role needs "+c.rule) {
				t.Fatalf("result %+v, want rejected naming %s", rs[0], c.rule)
			}
			if calls := target.Calls(); len(calls) != 0 {
				t.Errorf("the target ran %v", calls)
			}
		})
	}
}

// The operator's side: Send and CheckPermission as a reader name the
// refused call and the role to use; as an operator, CheckPermission passes
// and writes nothing.
func TestAReaderCannotSendAndIsToldWhichRoleCan(t *testing.T) {
	srv := redistest.Server(t)
	ctx := t.Context()
	reader := NewClient(aclClient(t, srv, "reader", redisacl.Reader), testKey)
	_, err := reader.Send(ctx, "svc", OpPull, TargetAll, nil)
	var perr *PermissionError
	if !errors.As(err, &perr) || !errors.Is(err, ErrNoPermission) {
		t.Fatalf("Send as sg-reader = %v, want a *PermissionError", err)
	}
	want := "this Redis user cannot send control ops (XADD to sg:control:{svc} refused): use the sg-operator role: " +
		"NOPERM this user has no permissions to run the 'xadd' command: the sg-operator role needs +xadd (docs/redis-acl.md)"
	if !strings.HasSuffix(err.Error(), want) {
		t.Errorf("Send as sg-reader:\n%v\nwant it to end\n%s", err, want)
	}
	if err := reader.CheckPermission(ctx, "svc"); err == nil || err.Error() != want {
		t.Errorf("CheckPermission as sg-reader:\n%v\nwant\n%s", err, want)
	}
	blind := NewClient(aclClient(t, srv, "blind", redisacl.Operator, "%R~sg:control:results:*"), testKey)
	if err := blind.CheckPermission(ctx, "svc"); !errors.As(err, &perr) || perr.Call != "XREAD of sg:control:results:{svc}" ||
		!strings.HasSuffix(err.Error(), "the sg-operator role needs %R~sg:control:results:* (docs/redis-acl.md)") {
		t.Errorf("CheckPermission without the results pattern: %v", err)
	}
	operator := NewClient(aclClient(t, srv, "operator", redisacl.Operator), testKey)
	if err := operator.CheckPermission(ctx, "svc"); err != nil {
		t.Errorf("CheckPermission as sg-operator: %v", err)
	}
	if n, err := srv.Client(t).Exists(ctx, StreamKey("svc")).Result(); err != nil || n != 0 {
		t.Errorf("%s exists after the checks: %d, %v", StreamKey("svc"), n, err)
	}
}
