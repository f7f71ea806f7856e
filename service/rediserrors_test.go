package service

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// writeFault is a way for a running Redis to refuse the instance's writes
// with an error reply, while it still answers.
type writeFault struct {
	name    string
	want    string   // what Redis's error says
	args    []string // extra redis-server arguments
	user    bool     // the instance connects as an ACL user, "inst"
	brief   bool     // the fault ends by itself, maybe before a heartbeat fails
	induce  func(t *testing.T, r *refusalRig)
	recover func(t *testing.T, r *refusalRig)
}

// refusalRig is a redis-server and an administrator's connection to it.
type refusalRig struct {
	srv   *redistest.Srv
	admin *redis.Client
}

func (r *refusalRig) do(t *testing.T, args ...any) {
	t.Helper()
	if err := r.admin.Do(t.Context(), args...).Err(); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
}

// until polls cond until it holds, failing the test after 30s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	pollUntil(t, 30*time.Second, what, cond)
}

var writeFaults = []writeFault{
	{
		name: "OOM", want: "OOM command not allowed",
		induce: func(t *testing.T, r *refusalRig) {
			r.do(t, "CONFIG", "SET", "maxmemory-policy", "noeviction")
			r.do(t, "CONFIG", "SET", "maxmemory", "1") // below what is used: every write that may grow memory is refused
		},
		recover: func(t *testing.T, r *refusalRig) { r.do(t, "CONFIG", "SET", "maxmemory", "0") },
	},
	{
		name: "READONLY", want: "READONLY You can't write against a read only replica",
		induce: func(t *testing.T, r *refusalRig) {
			master := redistest.Server(t) // the instance's Redis is demoted to its replica
			r.do(t, "REPLICAOF", "127.0.0.1", master.Port())
		},
		recover: func(t *testing.T, r *refusalRig) { r.do(t, "REPLICAOF", "NO", "ONE") },
	},
	{
		name: "NOPERM", want: "NOPERM", user: true,
		induce: func(t *testing.T, r *refusalRig) {
			r.do(t, "ACL", "SETUSER", "inst", "-evalsha", "-eval") // an administrator's change removes the scripts
		},
		recover: func(t *testing.T, r *refusalRig) { r.do(t, "ACL", "SETUSER", "inst", "+evalsha", "+eval") },
	},
	{
		name: "LOADING", want: "LOADING Redis is loading the dataset in memory", args: []string{"--enable-debug-command", "local"}, brief: true,
		induce: func(t *testing.T, r *refusalRig) {
			// A restart with a data set to load: three million keys take a
			// second or two to load, and every command gets LOADING until then.
			// Writing them and saving them take longer than the admin client's
			// 3s read timeout on a busy machine: a client that waits a minute.
			slow := redis.NewClient(&redis.Options{Addr: r.srv.Addr(), ReadTimeout: time.Minute, MaxRetries: -1})
			defer slow.Close()
			for _, cmd := range [][]any{{"DEBUG", "POPULATE", 3000000}, {"SAVE"}} {
				if err := slow.Do(t.Context(), cmd...).Err(); err != nil {
					t.Fatalf("%v: %v", cmd, err)
				}
			}
			r.srv.RestartLoading()
		},
		recover: func(t *testing.T, r *refusalRig) {
			until(t, "the data set loaded", func() bool { return r.admin.Ping(t.Context()).Err() == nil })
		},
	},
	{
		name: "MISCONF", want: "MISCONF",
		induce: func(t *testing.T, r *refusalRig) {
			// A save point, and a save that fails: the RDB file's name is a
			// directory, so the rename at the end of BGSAVE fails, even as root.
			r.do(t, "CONFIG", "SET", "save", "3600 1")
			if err := os.Mkdir(filepath.Join(r.srv.Dir(), "dump.rdb"), 0o755); err != nil {
				t.Fatal(err)
			}
			r.do(t, "BGSAVE")
			until(t, "the background save failed", func() bool { return bgsaveStatus(t, r.admin) == "err" })
		},
		recover: func(t *testing.T, r *refusalRig) {
			if err := os.Remove(filepath.Join(r.srv.Dir(), "dump.rdb")); err != nil {
				t.Fatal(err)
			}
			r.do(t, "BGSAVE")
			until(t, "the background save succeeded", func() bool { return bgsaveStatus(t, r.admin) == "ok" })
		},
	},
}

// bgsaveStatus returns rdb_last_bgsave_status, once no save is in progress.
func bgsaveStatus(t *testing.T, c *redis.Client) string {
	info, err := c.Info(t.Context(), "persistence").Result()
	if err != nil {
		return ""
	}
	if strings.Contains(info, "rdb_bgsave_in_progress:1") {
		return "in progress"
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "rdb_last_bgsave_status:"); ok {
			return v
		}
	}
	return ""
}

// A running instance whose Redis starts answering its writes with an error
// keeps serving; /healthz names the error (registry:writes), readiness
// follows SG_REDIS_REQUIRED, each loop logs it once at warn; once Redis
// accepts writes again the entry is back within one heartbeat, and the
// transitions made meanwhile reach sg:events.
func TestRedisRefusingWritesWhileRunning(t *testing.T) {
	for _, fault := range writeFaults {
		for _, required := range []bool{true, false} {
			name := fault.name + "/required"
			if !required {
				name = fault.name + "/not required"
			}
			t.Run(name, func(t *testing.T) { runWriteFault(t, fault, required) })
		}
	}
}

func runWriteFault(t *testing.T, fault writeFault, required bool) {
	srv := redistest.Server(t, fault.args...)
	rig := &refusalRig{srv: srv, admin: srv.Client(t)}
	url := srv.URL()
	if fault.user {
		rig.do(t, "ACL", "SETUSER", "inst", "on", ">inst-password", "~*", "&*", "+@all")
		url = "redis://inst:inst-password@" + srv.Addr() + "/0"
	}
	client, err := fleetenv.NewRedisClient(url) // as Main builds it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	logs := &safeBuffer{}
	const ttl = 3 * time.Second // a heartbeat a second
	in, err := New(newTestService(),
		WithServiceName("svc"), WithInstanceID("i-1"), WithRedis(client), WithRedisRequired(required),
		WithServiceTTL(ttl), WithBootJitter(0), WithRedisTimeout(time.Second), WithHealthAddr("127.0.0.1:0"),
		WithHealthOption(health.WithInterval(100*time.Millisecond)), WithLogger(logs.logger()))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	done := startRun(t, in)
	defer func() {
		_ = in.Shutdown(context.Background())
		if err := wait(t, done); err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	waitServing(t, in) // the Drain below needs Run under way, not only the state
	reg := registry.New(rig.admin)
	until(t, "the entry written", func() bool {
		e, err := reg.Entry(t.Context(), "svc", "i-1")
		return err == nil && e.Status == "running"
	})

	fault.induce(t, rig)
	began := time.Now()
	// Transitions during the fault: their status updates wait in the queue.
	if err := in.Drain(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := in.Undrain(t.Context()); err != nil {
		t.Fatal(err)
	}
	var check health.CheckResult
	until(t, "/healthz names "+fault.want, func() bool {
		check = healthCheck(t, in, WritesCheck)
		return check.Status != health.StatusPass && strings.Contains(check.Output, fault.want)
	})
	detected := time.Since(began)
	if in.State() != phases.Running {
		t.Errorf("state %s during the fault, want running", in.State())
	}
	if code := probeCode(t, in, "/livez"); code != http.StatusOK {
		t.Errorf("/livez during the fault = %d, want 200", code)
	}
	wantReady := http.StatusOK
	if required {
		wantReady = http.StatusServiceUnavailable
	}
	if code := probeCode(t, in, "/readyz"); code != wantReady {
		t.Errorf("/readyz during the fault with Redis required=%v: %d, want %d (%s %q)", required, code, wantReady, check.Status, check.Output)
	}

	if !fault.brief {
		// The fault lasts until the heartbeat has failed too: the recovery
		// is then the heartbeat's as well as the writer's.
		until(t, "a heartbeat failed", func() bool { return memberOf(in).Stats().HeartbeatFailures > 0 })
	}
	fault.recover(t, rig)
	recovered := time.Now()
	until(t, "the entry back, the events delivered, /healthz passing", func() bool {
		e, err := reg.Entry(t.Context(), "svc", "i-1")
		if err != nil || e.Status != "running" {
			return false
		}
		evs, _, err := reg.Events(t.Context(), "0", 1000, 0)
		if err != nil || !hasEvent(evs, "draining", began) || !hasEvent(evs, "running", began) {
			return false
		}
		return healthCheck(t, in, WritesCheck).Status == health.StatusPass
	})
	back := time.Since(recovered)
	t.Logf("%s (redis required %v): named on /healthz %v after it began; entry, events and check back %v after Redis accepted writes",
		fault.name, required, detected.Round(time.Millisecond), back.Round(time.Millisecond))
	if back > ttl/3+time.Second {
		t.Errorf("back %v after the recovery, want within one heartbeat (%v) and a second", back, ttl/3)
	}
	if code := probeCode(t, in, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after the recovery = %d, want 200", code)
	}
	for _, line := range []string{"registry: writes failing", "registry: heartbeat failed"} {
		if n := strings.Count(logs.String(), line); n > 1 {
			t.Errorf("%q logged %d times in a fault shorter than a minute, want once at warn:\n%s", line, n, logs.String())
		}
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), fault.want) {
		t.Errorf("no warn line names %q:\n%s", fault.want, logs.String())
	}
}

// healthCheck returns one check of /healthz, after a refresh.
func healthCheck(t *testing.T, in *Instance, name string) health.CheckResult {
	t.Helper()
	in.health.Refresh(t.Context())
	var body health.Response
	if err := json.Unmarshal([]byte(httpGet(t, in, "/healthz")), &body); err != nil {
		t.Fatal(err)
	}
	if c := body.Checks[name]; len(c) == 1 {
		return c[0]
	}
	return health.CheckResult{}
}

// hasEvent reports whether evs hold i-1's move to state at or after since.
func hasEvent(evs []registry.Event, to string, since time.Time) bool {
	for _, e := range evs {
		if e.Instance == "i-1" && e.To == to && !e.Time.Before(since.Add(-time.Second)) {
			return true
		}
	}
	return false
}
