package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"

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
