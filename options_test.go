package lifecycle

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestNewRefusesTheOptionsOnlyMainHonoursNamingThem(t *testing.T) {
	for name, o := range map[string]Option{
		"WithEnv":         WithEnv(envOf(nil)),
		"WithStderr":      WithStderr(io.Discard),
		"WithRestartExit": WithRestartExit(ExitRestart),
	} {
		_, err := New(newTestService(), WithoutHealthServer(), o)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Name != name || !strings.Contains(err.Error(), "only Main") {
			t.Errorf("New with %s = %v, want a *ConfigError naming it", name, err)
		}
	}
}

func TestARestartExitCodeOutsideThreeTo125IsAConfigError(t *testing.T) {
	for _, code := range []int{1, 2, 126} {
		var stderr bytes.Buffer
		if got := MainContext(context.Background(), newTestService(), WithEnv(envOf(nil)), WithStderr(&stderr), WithRestartExit(code)); got != ExitConfig || !strings.Contains(stderr.String(), "WithRestartExit") {
			t.Errorf("WithRestartExit(%d): exit %d, want %d naming the option:\n%s", code, got, ExitConfig, stderr.String())
		}
	}
}

func TestHealthHostAndPortVariablesOverrideTheirPartOfTheAddress(t *testing.T) {
	for _, tc := range []struct {
		opt  string
		env  map[string]string
		want string
	}{
		{":9090", map[string]string{"SG_HEALTH_PORT": "0"}, ":0"},
		{"127.0.0.1:7000", map[string]string{"SG_HEALTH_PORT": "0"}, "127.0.0.1:0"},
		{"127.0.0.1:7000", map[string]string{"SG_HEALTH_HOST": "localhost"}, "localhost:7000"},
		{":9090", map[string]string{"SG_HEALTH_HOST": "[::1]"}, "[::1]:9090"},
		// A bare IPv6 address, as the downward API's status.podIP gives it.
		{":9090", map[string]string{"SG_HEALTH_HOST": "fd00:10::7"}, "[fd00:10::7]:9090"},
		{":9090", nil, ":9090"},
	} {
		cfg := defaultConfig()
		WithHealthAddr(tc.opt).apply(&cfg)
		env, err := ParseEnv(envOf(tc.env))
		if err != nil {
			t.Fatal(err)
		}
		env.applyTo(&cfg)
		if cfg.healthAddr != tc.want {
			t.Errorf("WithHealthAddr(%q) with %v: %q, want %q", tc.opt, tc.env, cfg.healthAddr, tc.want)
		}
	}
}
