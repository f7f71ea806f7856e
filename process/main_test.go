package process

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/service"
)

func TestEnvironmentVariablesAreReadWithTheirTypes(t *testing.T) {
	env, err := ParseEnv(envOf(map[string]string{
		fleetenv.ControlKey:      "new-key-0123456789abcdef,old-key-0123456789abcdef",
		fleetenv.ControlInsecure: "true",
		fleetenv.AdvertiseAddr:   "[::1]:8443",
		fleetenv.RedisTimeout:    "750ms",
		fleetenv.BootTimeout:     "0",
		fleetenv.HealthHost:      "fd00:10::7", // a bare IPv6 address, as the downward API's status.podIP gives it
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(env.ControlKeys) != 2 || string(env.ControlKeys[0]) != "new-key-0123456789abcdef" || string(env.ControlKeys[1]) != "old-key-0123456789abcdef" {
		t.Errorf("keys %q, want new then old", env.ControlKeys)
	}
	if !env.ControlInsecure || !env.ControlInsecureSet {
		t.Errorf("%s=true not read", fleetenv.ControlInsecure)
	}
	if env.AdvertiseAddr != "[::1]:8443" {
		t.Errorf("%s = %q", fleetenv.AdvertiseAddr, env.AdvertiseAddr)
	}
	if !env.RedisTimeoutSet || env.RedisTimeout != 750*time.Millisecond || !env.BootTimeoutSet || env.BootTimeout != 0 {
		t.Errorf("SG_REDIS_TIMEOUT %v (%v), SG_BOOT_TIMEOUT %v (%v): want 750ms and 0, both set", env.RedisTimeout, env.RedisTimeoutSet, env.BootTimeout, env.BootTimeoutSet)
	}
	if !env.HealthHostSet || env.HealthHost != "fd00:10::7" {
		t.Errorf("SG_HEALTH_HOST %q", env.HealthHost)
	}
	if env.HandOver != nil {
		t.Errorf("a hand-over without SG_RESTART_*: %+v", env.HandOver)
	}
}

func TestMainsRedisClientHonoursDeadlinesAndDialsOnce(t *testing.T) {
	env, err := ParseEnv(envOf(map[string]string{"REDIS_URL": "redis://127.0.0.1:6379/0"}))
	if err != nil {
		t.Fatal(err)
	}
	defer env.Redis.Close()
	o := env.Redis.(*redis.Client).Options()
	if !o.ContextTimeoutEnabled || o.DialerRetries != 1 {
		t.Fatalf("ContextTimeoutEnabled %v, DialerRetries %d; want true, 1", o.ContextTimeoutEnabled, o.DialerRetries)
	}
}

func TestRefusedRedisFailsFastWithMainsClientAndSlowlyWithGoRedisDefaults(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	env, err := ParseEnv(envOf(map[string]string{"REDIS_URL": "redis://" + addr + "/0"}))
	if err != nil {
		t.Fatal(err)
	}
	defer env.Redis.Close()
	defaults := redis.NewClient(&redis.Options{Addr: addr})
	defer defaults.Close()
	ping := func(c redis.UniversalClient) time.Duration {
		ctx, cancel := context.WithTimeout(context.Background(), service.DefaultRedisTimeout)
		defer cancel()
		start := time.Now()
		if err := c.Ping(ctx).Err(); err == nil {
			t.Fatal("PING to a closed port succeeded")
		}
		return time.Since(start)
	}
	ours, theirs := ping(env.Redis), ping(defaults)
	t.Logf("PING, connection refused: %v with Main's client (one dial per attempt), %v with go-redis defaults (5 dials 100ms apart per attempt, 4 attempts)", ours, theirs)
	if ours > 500*time.Millisecond {
		t.Fatalf("a refused PING took %v with Main's client, want well under a second", ours)
	}
}

func TestPingFailureExitCodeIsOne(t *testing.T) {
	var stderr bytes.Buffer
	code := Config{Getenv: envOf(map[string]string{
		"REDIS_URL": "redis://127.0.0.1:1/0", "SG_BOOT_JITTER": "0", "SG_HEALTH_PORT": "0", "SG_HEALTH_HOST": "127.0.0.1",
	}), Stderr: &stderr}.Run(context.Background(), newTestService())
	if code != ExitFailed {
		t.Fatalf("exit code %d, want %d; stderr:\n%s", code, ExitFailed, stderr.String())
	}
	if !strings.Contains(stderr.String(), "hard-fail gate") {
		t.Errorf("stderr does not say why:\n%s", stderr.String())
	}
}

func TestBadEnvironmentExitsTwoNamingTheVariableAndTouchesNoRedis(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"REDIS_URL", "http://localhost:6379"},
		{"REDIS_URL", "redis://127.0.0.1:6379/notadb"},
		{"SG_REDIS_REQUIRED", "maybe"},
		{"SG_BOOT_JITTER", "soon"},
		{"SG_BOOT_JITTER", "-1s"},
		{"SG_REDIS_TIMEOUT", "0"},
		{"SG_REDIS_TIMEOUT", "-2s"},
		{"SG_REDIS_TIMEOUT", "soon"},
		{"SG_BOOT_TIMEOUT", "-1m"},
		{"SG_BOOT_TIMEOUT", "forever"},
		{"SG_SERVICE_TTL", "1s"},
		{"SG_SERVICE_TTL", "forever"},
		{"SG_HEALTH_PORT", "99999"},
		{"SG_HEALTH_PORT", "http"},
		{"SG_HEALTH_HOST", "0.0.0.0:80"},
		{"SG_SERVICE_NAME", "Bad{Name}"},
		{"SG_INSTANCE_ID", "a:b"},
		{"SG_CONTROL_KEY", "short"},
		{"SG_CONTROL_KEY", "a-good-key-of-24-bytes!!,short"},
		{"SG_CONTROL_KEY", "a-good-key-of-24-bytes!!,"},
		{"SG_CONTROL_INSECURE", "maybe"},
		{"SG_RESTART_EXIT_CODE", "soon"},
		{"SG_RESTART_EXIT_CODE", "1"},
		{"SG_ADVERTISE_ADDR", "8080"},
		{"SG_ADVERTISE_ADDR", ":8080"},
		{"SG_ADVERTISE_ADDR", "0.0.0.0:8080"},
		{"SG_ADVERTISE_ADDR", "api:0"},
		{"SG_DRAIN_DELAY", "31s"}, // not shorter than the shutdown timeout: found by New, named all the same
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			mr := miniredis.RunT(t)
			env := map[string]string{"REDIS_URL": "redis://" + mr.Addr() + "/0", tc.name: tc.value}
			var stderr bytes.Buffer
			code := Config{Getenv: envOf(env), Stderr: &stderr}.Run(context.Background(), newTestService())
			if code != ExitConfig {
				t.Fatalf("exit code %d, want %d", code, ExitConfig)
			}
			shown := tc.value
			if tc.name == "SG_CONTROL_KEY" {
				shown = "(redacted)"
			}
			if out := stderr.String(); !strings.Contains(out, tc.name) || !strings.Contains(out, shown) {
				t.Errorf("message does not name %s and %q:\n%s", tc.name, shown, out)
			}
			if out := stderr.String(); tc.name == "SG_CONTROL_KEY" && (strings.Contains(out, "short") || strings.Contains(out, "good-key")) {
				t.Errorf("message shows the key:\n%s", out)
			}
			if n := mr.TotalConnectionCount(); n != 0 {
				t.Errorf("%d connections reached Redis", n)
			}
		})
	}
}

func TestARestartExitCodeOutsideThreeTo125IsAConfigError(t *testing.T) {
	for _, code := range []int{1, 2, 126} {
		var stderr bytes.Buffer
		if got := (Config{Getenv: envOf(nil), Stderr: &stderr, RestartExit: code}).Run(context.Background(), newTestService()); got != ExitConfig || !strings.Contains(stderr.String(), "Config.RestartExit") {
			t.Errorf("RestartExit %d: exit %d, want %d naming Config.RestartExit:\n%s", code, got, ExitConfig, stderr.String())
		}
	}
}

func TestBadRestartHandOverExitsTwo(t *testing.T) {
	for _, tc := range []struct{ env map[string]string }{
		{map[string]string{EnvRestartNotBefore: "yesterday"}},
		{map[string]string{EnvRestartNotBefore: "1700000000000", EnvRestartNonces: "nonce 1:2:3"}},
		{map[string]string{EnvRestartNonces: "nonce-0001:1:2"}},
	} {
		var stderr bytes.Buffer
		if code := (Config{Getenv: envOf(tc.env), Stderr: &stderr}).Run(context.Background(), newTestService()); code != ExitConfig {
			t.Errorf("%v: exit code %d, want %d", tc.env, code, ExitConfig)
		}
		if !strings.Contains(stderr.String(), "SG_RESTART_") {
			t.Errorf("%v: message does not name the variable:\n%s", tc.env, stderr.String())
		}
	}
}

func TestRestartOpWithExitCodeGoesThroughShutdownAndReturnsTheCode(t *testing.T) {
	f := newFixture(t)
	codeCh := make(chan int, 1)
	go func() {
		codeCh <- Config{Getenv: envOf(nil), Stderr: f.logs, RestartExit: ExitRestart}.Run(context.Background(), newTestService(),
			f.options(service.WithControlKeys(testControlKey))...)
	}()
	// The instance is not reachable from here: wait for its transitions.
	poll(t, func() bool { return strings.Contains(f.rec.path(), "running") }, "running")
	c := controlops.NewClient(f.client, testControlKey, controlops.WithClock(f.clock))
	sent, err := c.Send(context.Background(), "svc", controlops.OpRestart, "*", nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-codeCh:
		if code != ExitRestart {
			t.Fatalf("Run = %d, want %d (ExitRestart)", code, ExitRestart)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the restart op")
	}
	if got, want := f.rec.path(), "running stopping_daemons stopping_health deregistering cleaning_up stopped"; !strings.HasSuffix(got, want) {
		t.Fatalf("path %s, want it to end %s", got, want)
	}
	for _, tr := range f.rec.transitions() {
		if tr.From == phases.Running && tr.To == phases.StoppingDaemons && tr.Event != phases.Restart {
			t.Fatalf("left running by %q, want restart", tr.Event)
		}
	}
	rs, err := c.Results(context.Background(), "svc", "0", 10, 0)
	if err != nil || len(rs) != 1 || rs[0].Status != controlops.StatusAccepted || rs[0].OpID != sent.ID {
		t.Fatalf("results %+v (%v), want one accepted for %s", rs, err, sent.ID)
	}
	if !f.mr.Exists(controlops.PendingKey("svc", "i-1")) {
		t.Fatal("no restart hand-over for the next process")
	}
}

func TestRestartHandOverThroughTheEnvironmentKeepsOpsSentMeanwhileAndRefusesReplays(t *testing.T) {
	f := newFixture(t)
	pulls := make(chan string, 4)
	pull := service.WithPullHandler(func(_ context.Context, args json.RawMessage) error {
		pulls <- string(args)
		return nil
	})
	old, err := service.New(newTestService(), f.options(service.WithControlKeys(testControlKey), pull)...)
	if err != nil {
		t.Fatal(err)
	}
	done := startRun(t, old)
	waitState(t, old, phases.Running)
	c := controlops.NewClient(f.client, testControlKey, controlops.WithClock(f.clock), controlops.WithTTL(controlops.MaxTTL))
	f.clock.Advance(time.Minute) // the op comes a while after the process started
	restart, err := c.Send(context.Background(), "svc", controlops.OpRestart, "i-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(t, done); err != nil {
		t.Fatal(err)
	}
	code, plan := exitCode(old, nil, 0, old.Logger())
	if plan == nil || code != ExitFailed {
		t.Fatalf("exit code %d and plan %v after a restart op: want a plan to exec", code, plan)
	}
	if want := strconv.FormatInt(restart.IssuedAt.UnixMilli(), 10); plan.notBefore != want {
		t.Errorf("%s=%s, want the restart's issued_at %s", EnvRestartNotBefore, plan.notBefore, want)
	}
	if !strings.HasPrefix(plan.nonces, restart.Nonce+":") {
		t.Errorf("%s=%q does not hand over the restart's nonce %s", EnvRestartNonces, plan.nonces, restart.Nonce)
	}

	// A pull sent while the instance restarts; the next process comes up 20s
	// later.
	f.clock.Advance(time.Second)
	meanwhile, err := c.Send(context.Background(), "svc", controlops.OpPull, "i-1", json.RawMessage(`"meanwhile"`))
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(19 * time.Second)
	env := map[string]string{EnvRestartNotBefore: plan.notBefore, EnvRestartNonces: plan.nonces}
	ctx, cancel := context.WithCancel(context.Background())
	codeCh := make(chan int, 1)
	next := *f
	next.rec = &recorder{}
	go func() {
		codeCh <- next.config(env).Run(ctx, newTestService(), next.options(service.WithControlKeys(testControlKey), pull)...)
	}()
	defer func() {
		cancel()
		if code := <-codeCh; code != ExitOK {
			t.Errorf("Run = %d", code)
		}
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	for _, op := range []controlops.Op{restart, meanwhile} {
		final, err := c.Wait(wctx, "svc", op, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", op.Name, err)
		}
		if r := final["i-1"]; r.Status != controlops.StatusDone {
			t.Errorf("%s: %s %q, want done by the next process", op.Name, r.Status, r.Reason)
		}
	}
	select {
	case got := <-pulls:
		if got != `"meanwhile"` {
			t.Errorf("pull handler got %s", got)
		}
	default:
		t.Error("the pull sent during the restart never reached the handler")
	}

	// Redis wiped, the restart replayed: the next process knows its nonce from
	// the environment alone.
	f.mr.FlushAll()
	for _, op := range []controlops.Op{restart, meanwhile} {
		id, err := f.client.XAdd(context.Background(), &redis.XAddArgs{Stream: controlops.StreamKey("svc"), Values: op.Values()}).Result()
		if err != nil {
			t.Fatal(err)
		}
		op.StreamID = id
		final, err := c.Wait(wctx, "svc", op, nil, nil)
		if err != nil {
			t.Fatalf("replayed %s: %v", op.Name, err)
		}
		if r := final["i-1"]; r.Status != controlops.StatusRejected || !strings.Contains(r.Reason, "replay") {
			t.Errorf("replayed %s: %s %q, want rejected as a replay", op.Name, r.Status, r.Reason)
		}
	}
	select {
	case got := <-pulls:
		t.Errorf("the replayed pull ran (%s)", got)
	default:
	}
}

// During a Redis outage go-redis logs a line per failed dial (57 lines in 8s
// were measured). Main routes them through the instance's logger at warn:
// the first at once, the next a minute later on the instance's clock, with
// the count.
func TestMainRoutesGoRedisLogLinesThroughItsLoggerOnceAMinute(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := l.Addr().String()
	l.Close() // nothing listens there any more: every dial is refused

	clk := clockwork.NewFakeClock()
	logs := &lockedWriter{b: &bytes.Buffer{}}
	env := map[string]string{
		"REDIS_URL": "redis://" + refused + "/0", "SG_REDIS_REQUIRED": "false", "SG_BOOT_JITTER": "0",
		"SG_HEALTH_PORT": "0", "SG_HEALTH_HOST": "127.0.0.1",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- Config{Getenv: envOf(env), clock: clk}.Run(ctx, newTestService(), service.WithClock(clk), service.WithLogger(logs.logger()))
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return")
		}
		// go-redis redials a refused address on a goroutine of its pool that
		// sees the closed client within a second (it sleeps 1s between dials).
		poll(t, func() bool { return !goroutineIn("ConnPool).tryDial") }, "go-redis's redial goroutine exits")
	}()
	routed := func() []string {
		var out []string
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, `msg="redis client"`) {
				out = append(out, line)
			}
		}
		return out
	}
	poll(t, func() bool { return strings.Contains(logs.String(), "boot completed") }, "boot completed, degraded")
	first := routed()
	if len(first) != 1 || !strings.Contains(first[0], "level=WARN") || !strings.Contains(first[0], "connection refused") {
		t.Fatalf("go-redis lines in the instance's log during the boot: %q, want exactly one at warn", first)
	}
	if !strings.Contains(first[0], "instance=") {
		t.Errorf("the go-redis line %q does not carry the instance's attributes", first[0])
	}
	// A minute later on the instance's clock the writer retries, go-redis
	// fails to dial again, and the second line counts those left out.
	clk.Advance(61 * time.Second)
	poll(t, func() bool { return len(routed()) == 2 }, "a second go-redis line a minute later")
	second := routed()[1]
	n := regexp.MustCompile(`suppressed=(\d+)`).FindStringSubmatch(second)
	if n == nil {
		t.Fatalf("second line %q does not count the lines left out", second)
	}
	t.Logf("go-redis printed 1+%s lines during the boot against a refused port; the instance's log has 1, then the next a minute later", n[1])
}

// goroutineIn reports whether a goroutine runs a function whose name
// contains fn.
func goroutineIn(fn string) bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn)
}

// coreutils timeout and some supervisors signal the process and its group:
// one stop request arrives as two SIGTERMs a millisecond apart. The second
// is the first again, not a request to exit at once: the shutdown is clean
// and the entry is removed. At 1ms apart the Go runtime may merge the two
// (a signal still pending is not queued twice); at 50ms both surely arrive,
// and the service's OnStop waits until the second was handled, so that it
// lands during the shutdown steps, where a second request would exit at
// once. On a busy machine even 50ms apart the runtime merged them now and
// then (a run beside two CPU hogs): so the second is sent once the first was
// handled, and the fake clock keeps it inside the signal window.
func TestTwoSIGTERMsAMillisecondApartAreOneCleanStop(t *testing.T) {
	for _, tc := range []struct {
		name     string
		gap      time.Duration
		delivery bool // both signals surely arrive: OnStop waits for the second
	}{{"1ms", time.Millisecond, false}, {"after the first was handled", 0, true}} {
		t.Run(tc.name, func(t *testing.T) {
			// The test's own listener keeps SIGTERM from killing the test
			// binary should a signal land after Run stopped listening.
			guard := make(chan os.Signal, 8)
			signal.Notify(guard, syscall.SIGTERM)
			defer signal.Stop(guard)
			f := newFixture(t)
			seen, first := make(chan struct{}), make(chan struct{})
			sent := make(chan struct{})
			logs := &watchWriter{w: &watchWriter{w: f.logs, want: "the same stop request", seen: seen}, want: "signal received: shutting down", seen: first}
			// OnStop waits until the second signal was sent, at least, so
			// that it lands while Run listens however slow the machine.
			svc := &stopAfter{testService: newTestService(), release: sent}
			if tc.delivery {
				svc.release = seen
			}
			code := make(chan int, 1)
			go func() {
				code <- f.config(nil).Run(context.Background(), svc, f.options(
					service.WithShutdownTimeout(10*time.Second), service.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))...)
			}()
			poll(t, func() bool { return strings.Contains(f.rec.path(), "running") }, "running")
			if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if tc.delivery {
				select {
				case <-first:
				case <-time.After(10 * time.Second):
					t.Fatal("the first SIGTERM was not handled")
				}
			} else {
				time.Sleep(tc.gap) // the gap between the two signals: what the test is about
			}
			if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			close(sent)
			select {
			case c := <-code:
				if c != ExitOK {
					t.Fatalf("Run = %d, want %d", c, ExitOK)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Run did not return after two SIGTERMs")
			}
			if tc.delivery && !svc.released {
				t.Errorf("the second signal was not handled during the shutdown:\n%s", f.logs.String())
			}
			if f.mr.Exists("sg:registry:service:{svc}:i-1") {
				t.Error("the registry entry is still there: the stop was not carried out")
			}
		})
	}
}

// stopAfter is a service whose OnStop waits until release is closed (at most
// 10s), when it is not nil.
type stopAfter struct {
	*testService
	release  chan struct{}
	released bool
}

func (s *stopAfter) OnStop(context.Context) error {
	if s.release == nil {
		return nil
	}
	select {
	case <-s.release:
		s.released = true
	case <-time.After(10 * time.Second):
	}
	return nil
}

// watchWriter writes to w and closes seen the first time a write contains
// want.
type watchWriter struct {
	w    io.Writer
	want string
	seen chan struct{}
	once sync.Once
}

func (w *watchWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return w.w.Write(p)
}
