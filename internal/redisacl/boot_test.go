package redisacl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
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

// logs is an instance's log, safe for its goroutines.
type logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitingService waits in OnStart until the registry's writer has made its
// first write (the entry exists) or failed it (it logged so), so that the
// registration in phase 8 is never the instance's first write: a process's
// first write of a script carries its text (EVAL), every later one its SHA1
// (EVALSHA), and a boot's phases 3 to 7 usually take longer than that.
type waitingService struct {
	admin *redis.Client
	key   string
	logs  *logs
}

func (s waitingService) OnStart(ctx context.Context) error {
	if s.admin == nil {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if n, _ := s.admin.Exists(ctx, s.key).Result(); n == 1 || strings.Contains(s.logs.String(), "registry: writes failing") {
			return nil
		}
		time.Sleep(5 * time.Millisecond) // polling interval, bounded by the deadline
	}
	return fmt.Errorf("the registry's first write neither landed nor failed within 10s")
}
func (waitingService) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (waitingService) OnStop(context.Context) error  { return nil }

// when a rule of the sg-instance line is first needed, and so what its
// absence does.
type when string

const (
	atBoot      when = "boot"            // the boot fails (exit 1 in a process), naming the rule
	atPull      when = "pull"            // a signed pull is rejected, naming it
	atRestart   when = "restart"         // a signed restart is rejected, naming it
	atRolling   when = "rolling restart" // a signed restart with max_unavailable 1 is rejected, naming it
	atHeartbeat when = "heartbeat"       // the heartbeat fails, logged naming it (and /healthz's registry:writes)
	atStop      when = "stop"            // the deregistration fails, logged naming it; the entry expires by its TTL
)

// instanceRules says, for every rule of the sg-instance line, when an
// instance first needs it. Every rule of the document's line must be here.
var instanceRules = map[string]when{
	"+ping":                   atBoot, // phase 2
	"+eval":                   atBoot, // a script's first call carries its text
	"+evalsha":                atBoot, // every later call: the registration
	"+type":                   atBoot, // the entry script
	"+get":                    atBoot,
	"+set":                    atBoot,
	"+zadd":                   atBoot,
	"+zremrangebyscore":       atBoot,
	"+sadd":                   atBoot, // the services set script, phase 8
	"+xadd":                   atBoot, // sg:events, delivered by the registration
	"+hgetall":                atBoot, // phase 8.5: the daemon's start position
	"+xrevrange":              atBoot,
	"+xread":                  atBoot, // phase 8.5: the daemon checks it can read
	"~sg:registry:*":          atBoot,
	"%W~sg:events":            atBoot,
	"%R~sg:control:{*}":       atBoot,
	"%W~sg:control:results:*": atBoot, // phase 8.5: the daemon checks it can answer
	"~sg:control:pending:*":   atBoot, // phase 8.5: a restart handed over?
	"~sg:control:nonce:*":     atPull,
	"+hset":                   atRestart, // the hand-over script
	"+zscore":                 atRolling,
	"+zcard":                  atRolling,
	"+pexpireat":              atRolling,
	"~sg:control:slots:*":     atRolling,
	"+pexpire":                atHeartbeat,
	"+zrem":                   atStop,
	"+del":                    atStop,
}

var bootKey = []byte("redisacl-boot-test-key-0123456789")

// For each rule of the sg-instance line, an instance whose user has every
// rule but that one fails where the rule is first needed, naming it: a boot
// fails (phase 2, 8 or 8.5) with an error that ends "the sg-instance role
// needs <rule> (docs/redis-acl.md)"; an op that needs it is rejected with
// that in its reason; a heartbeat or deregistration logs it. One
// redis-server, one user and service per rule, in-process instances.
func TestAnInstanceWithoutOneRuleFailsWhereItIsNeededNamingIt(t *testing.T) {
	if testing.Short() {
		t.Skip("a real redis-server")
	}
	lines := docLines(t)
	rules := roleRules(t, lines, redisacl.Instance)
	for _, r := range rules {
		if _, ok := instanceRules[r]; !ok {
			t.Errorf("the rule %s of the sg-instance line is not in instanceRules: say when an instance needs it", r)
		}
	}
	for r := range instanceRules {
		if !slices.Contains(rules, r) {
			t.Errorf("instanceRules has %s, which the sg-instance line does not", r)
		}
	}
	srv := redistest.Server(t)
	admin := srv.Client(t)
	for i, rule := range rules {
		t.Run(rule, func(t *testing.T) {
			t.Parallel()
			svc, user := fmt.Sprintf("svc%d", i), fmt.Sprintf("without-%d", i)
			setUser(t, admin, user, "pw", slices.DeleteFunc(slices.Clone(rules), func(r string) bool { return r == rule }))
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: user, Password: "pw", ContextTimeoutEnabled: true, DialerRetries: 1})
			defer rdb.Close()
			log := &logs{}
			in, err := service.New(waitingService{admin: admin, key: registry.EntryKey(svc, "i1"), logs: log},
				service.WithRedis(rdb), service.WithServiceName(svc), service.WithInstanceID("i1"),
				service.WithBootJitter(0), service.WithServiceTTL(3*time.Second), service.WithRedisTimeout(time.Second),
				service.WithControlKeys(bootKey), service.WithPullHandler(func(context.Context, json.RawMessage) error { return nil }),
				service.WithoutHealthServer(), service.WithTracerProvider(tracenoop.NewTracerProvider()),
				service.WithMeterProvider(noop.NewMeterProvider()), service.WithLogger(slog.New(slog.NewTextHandler(log, nil))))
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if t.Failed() {
					t.Logf("the instance's log:\n%s", log.String())
				}
			}()
			want := "the sg-instance role needs " + rule + " (" + redisacl.Doc + ")"
			ctx := context.Background()
			err = in.Boot(ctx)
			if instanceRules[rule] == atBoot {
				if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, redisacl.ErrNoPermission) {
					t.Fatalf("Boot = %v\nwant it to fail naming %q", err, want)
				}
				t.Logf("Boot: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("Boot = %v, want it to pass: %s is first needed at a %s", err, rule, instanceRules[rule])
			}
			done := make(chan error, 1)
			go func() { done <- in.Run(ctx) }()
			stop := func() {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				_ = in.Shutdown(sctx)
				<-done
			}
			switch instanceRules[rule] {
			case atPull, atRestart, atRolling:
				defer stop()
				op, args := controlops.OpPull, any(nil)
				switch instanceRules[rule] {
				case atRestart:
					op = controlops.OpRestart
				case atRolling:
					op, args = controlops.OpRestart, controlops.RestartArgs{MaxUnavailable: 1}
				}
				c := controlops.NewClient(admin, bootKey)
				sent, err := c.Send(ctx, svc, op, "i1", args)
				if err != nil {
					t.Fatal(err)
				}
				wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				final, err := c.Wait(wctx, svc, sent, []string{"i1"}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if r := final["i1"]; r.Status != controlops.StatusRejected || !strings.Contains(r.Reason, want) {
					t.Fatalf("%s: %+v, want rejected naming %q", op, r, want)
				}
				t.Logf("%s rejected: %s", op, final["i1"].Reason)
			case atHeartbeat:
				defer stop()
				waitLog(t, log, want)
			case atStop:
				stop()
				waitLog(t, log, want)
			}
		})
	}
}

// waitLog polls log until it holds text.
func waitLog(t *testing.T, log *logs, text string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), text) {
		if time.Now().After(deadline) {
			t.Fatalf("the log does not say %q within 10s", text)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.Contains(l, text) {
			t.Logf("logged: %s", l)
			return
		}
	}
}
