package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jonboulle/clockwork"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/service"
)

// configService is a testService whose Configure and Run return what they
// are given.
type configService struct {
	*testService
	configure error // returned by Configure
	run       error // returned by Run at once, when not nil
}

func (s *configService) Configure(context.Context) error { return s.configure }

func (s *configService) Run(ctx context.Context) error {
	if s.run != nil {
		return s.run
	}
	return s.testService.Run(ctx)
}

// badSetting is what a service's own Configure returns for a bad value of a
// setting of its own.
var badSetting = &service.ConfigError{Name: "ORDERS_DB_URL", Value: "postgres//db", Err: errors.New("want a URL such as postgres://db:5432/orders")}

// mainEnv is the environment of a process on Redis at addr: no jitter, the
// health server on a free loopback port.
func mainEnv(addr string) map[string]string {
	return map[string]string{
		"REDIS_URL": "redis://" + addr + "/0", "SG_SERVICE_NAME": "svc", "SG_BOOT_JITTER": "0",
		"SG_HEALTH_PORT": "0", "SG_HEALTH_HOST": "127.0.0.1",
	}
}

// A configuration error exits 2 wherever it is found: a *ConfigError (or an
// error wrapping one) from Configure in phase 3, or from Service.Run, fails
// the instance as any error does (the shutdown steps run, it ends in
// failed), and the process exits 2, naming the setting, so that a
// supervisor that does not restart on 2 does not restart it in a loop. Any
// other error is a failure: exit 1.
func TestAConfigErrorFromAPhaseOrRunExitsTwoAndAnyOtherErrorOne(t *testing.T) {
	for _, tc := range []struct {
		name           string
		configure, run error
		code           int
	}{
		{"Configure returns a ConfigError", badSetting, nil, ExitConfig},
		{"Configure wraps a ConfigError", fmt.Errorf("loading orders settings: %w", badSetting), nil, ExitConfig},
		{"Run returns a ConfigError", nil, badSetting, ExitConfig},
		{"Configure returns another error", errors.New("settings file: disk I/O error"), nil, ExitFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mr := miniredis.RunT(t)
			rec := &recorder{}
			var stderr lockedWriter
			stderr.b = &bytes.Buffer{}
			svc := &configService{testService: newTestService(), configure: tc.configure, run: tc.run}
			code := Config{Getenv: envOf(mainEnv(mr.Addr())), Stderr: &stderr}.Run(context.Background(), svc, service.WithTransitionObserver(rec))
			if code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			if got := rec.path(); !strings.HasSuffix(got, "deregistering cleaning_up failed") {
				t.Errorf("path %s, want the shutdown steps into failed", got)
			}
			want := "settings file: disk I/O error"
			if tc.code == ExitConfig {
				want = `ORDERS_DB_URL=\"postgres//db\"`
			}
			if !strings.Contains(stderr.String(), want) {
				t.Errorf("stderr does not name %s:\n%s", want, stderr.String())
			}
			if mr.Exists("sg:registry:service:{svc}:" + instanceOf(t, stderr.String())) {
				t.Error("the failed instance's registry entry is still there")
			}
		})
	}
}

// instanceOf returns the instance id in a log.
func instanceOf(t *testing.T, log string) string {
	t.Helper()
	_, rest, ok := strings.Cut(log, " instance=")
	if !ok {
		t.Fatalf("no instance= in the log:\n%s", log)
	}
	id, _, _ := strings.Cut(rest, " ")
	return id
}

// localService has configuration that needs no Redis (service.LocalConfigurer).
type localService struct {
	*configService
	local error // returned by ConfigureLocal
}

func (s *localService) ConfigureLocal(context.Context) error { return s.local }

// With Redis down, a bad setting found by ConfigureLocal (phase 1, before the
// jitter and the ping) exits 2, touching no Redis: here Redis accepts
// connections and never answers, as a frozen one does, the boot jitter is an
// hour on a clock that never moves, and none of it is waited for. The same
// error from Configure (phase 3, after the ping) is hidden behind the failed
// ping when Redis is required (exit 1: the limit LocalConfigurer exists
// for), and reached when it is not (the boot goes on degraded: exit 2).
func TestAConfigErrorFoundBeforeThePingExitsTwoWithRedisDownTouchingNoRedis(t *testing.T) {
	frozen := redistest.Silent(t)
	refused := redistest.RefusedAddr(t)
	for _, tc := range []struct {
		name     string
		svc      service.Service
		env      map[string]string
		code     int
		want     string
		conns    func() int // connections that reached Redis; nil: not counted
		clockFor bool       // the jitter on a fake clock
	}{
		{name: "ConfigureLocal, Redis frozen", svc: &localService{configService: &configService{testService: newTestService()}, local: badSetting},
			env:  map[string]string{"REDIS_URL": "redis://" + frozen.Addr() + "/0", "SG_BOOT_JITTER": "1h", "SG_REDIS_TIMEOUT": "1h"},
			code: ExitConfig, want: `ORDERS_DB_URL=\"postgres//db\"`, conns: frozen.Accepted, clockFor: true},
		{name: "Configure, Redis refused and required", svc: &configService{testService: newTestService(), configure: badSetting},
			env:  map[string]string{"REDIS_URL": "redis://" + refused + "/0"},
			code: ExitFailed, want: "redis is required but unavailable"},
		{name: "Configure, Redis refused and not required", svc: &configService{testService: newTestService(), configure: badSetting},
			env:  map[string]string{"REDIS_URL": "redis://" + refused + "/0", "SG_REDIS_REQUIRED": "false"},
			code: ExitConfig, want: `ORDERS_DB_URL=\"postgres//db\"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"SG_SERVICE_NAME": "svc", "SG_BOOT_JITTER": "0", "SG_HEALTH_PORT": "0", "SG_HEALTH_HOST": "127.0.0.1"}
			for k, v := range tc.env {
				env[k] = v
			}
			var opts []service.Option
			if tc.clockFor {
				opts = append(opts, service.WithClock(clockwork.NewFakeClock()))
			}
			var stderr lockedWriter
			stderr.b = &bytes.Buffer{}
			codeCh := make(chan int, 1)
			start := time.Now()
			go func() {
				codeCh <- Config{Getenv: envOf(env), Stderr: &stderr}.Run(context.Background(), tc.svc, opts...)
			}()
			var code int
			select {
			case code = <-codeCh:
				t.Logf("exit %d %v after Run began", code, time.Since(start))
			case <-time.After(10 * time.Second):
				t.Fatalf("Run did not return: it waits for the jitter or Redis\n%s", stderr.String())
			}
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit code %d, want %d naming %s; stderr:\n%s", code, tc.code, tc.want, stderr.String())
			}
			if tc.conns != nil {
				if n := tc.conns(); n != 0 {
					t.Errorf("%d connections reached Redis", n)
				}
			}
		})
	}
	// go-redis redials a refused address on a goroutine of its pool that sees
	// the closed client within a second.
	poll(t, func() bool { return !goroutineIn("ConnPool).tryDial") }, "go-redis's redial goroutine exits")
}
