package service

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/fleetenv"
)

// configWith applies opts to the default configuration, as New does.
func configWith(opts ...Option) config {
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	return cfg
}

func TestTheEnvironmentWinsOverTheOptionsBeforeIt(t *testing.T) {
	cfg := configWith(
		WithAdvertiseAddr("10.0.0.7:8080"), WithRedisTimeout(time.Second), WithBootTimeout(time.Minute),
		WithEnv(Env{
			AdvertiseAddr: "[::1]:8443",
			RedisTimeout:  750 * time.Millisecond, RedisTimeoutSet: true,
			BootTimeout: 0, BootTimeoutSet: true,
			ControlKeys: [][]byte{[]byte("new-key-0123456789abcdef"), []byte("old-key-0123456789abcdef")}, ControlInsecure: true, ControlInsecureSet: true,
		}))
	if cfg.advertiseAddr != "[::1]:8443" || cfg.nameSource("WithAdvertiseAddr", fleetenv.AdvertiseAddr) != fleetenv.AdvertiseAddr {
		t.Errorf("advertise address %q named %q, want SG_ADVERTISE_ADDR's value and name", cfg.advertiseAddr, cfg.nameSource("WithAdvertiseAddr", fleetenv.AdvertiseAddr))
	}
	if cfg.redisTimeout != 750*time.Millisecond || cfg.bootTimeout != 0 {
		t.Errorf("redis timeout %v, boot timeout %v: want the environment's 750ms and 0", cfg.redisTimeout, cfg.bootTimeout)
	}
	if len(cfg.controlKeys) != 2 || !cfg.controlInsecure {
		t.Errorf("control: %d keys, insecure %v; want the environment's", len(cfg.controlKeys), cfg.controlInsecure)
	}
	if _, err := New(newTestService(), WithBootTimeout(0), WithoutHealthServer()); err != nil {
		t.Fatalf("a boot timeout of 0 (disabled) is refused: %v", err)
	}
	if _, err := New(newTestService(), WithControlKeys([]byte("short")), WithoutHealthServer()); !errors.Is(err, ErrConfig) || strings.Contains(err.Error(), "short") {
		t.Errorf("WithControlKeys with a 5-byte key: %v, want a config error that does not show it", err)
	}
}

func TestABadValueIsNamedByWhatSetIt(t *testing.T) {
	_, err := New(newTestService(), WithoutHealthServer(), WithDrainDelay(time.Minute))
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Name != "WithDrainDelay" {
		t.Errorf("WithDrainDelay(1m): %v, want a *ConfigError naming the option", err)
	}
	_, err = New(newTestService(), WithoutHealthServer(), WithEnv(Env{DrainDelay: time.Minute, DrainDelaySet: true}))
	if !errors.As(err, &ce) || ce.Name != fleetenv.DrainDelay {
		t.Errorf("SG_DRAIN_DELAY=1m: %v, want a *ConfigError naming the variable", err)
	}
}

func TestHealthHostAndPortVariablesOverrideTheirPartOfTheAddress(t *testing.T) {
	for _, tc := range []struct {
		opt  string
		env  Env
		want string
	}{
		{":9090", Env{HealthPort: 0, HealthPortSet: true}, ":0"},
		{"127.0.0.1:7000", Env{HealthPort: 0, HealthPortSet: true}, "127.0.0.1:0"},
		{"127.0.0.1:7000", Env{HealthHost: "localhost", HealthHostSet: true}, "localhost:7000"},
		{":9090", Env{HealthHost: "[::1]", HealthHostSet: true}, "[::1]:9090"},
		// A bare IPv6 address, as the downward API's status.podIP gives it.
		{":9090", Env{HealthHost: "fd00:10::7", HealthHostSet: true}, "[fd00:10::7]:9090"},
		{":9090", Env{}, ":9090"},
	} {
		if cfg := configWith(WithHealthAddr(tc.opt), WithEnv(tc.env)); cfg.healthAddr != tc.want {
			t.Errorf("WithHealthAddr(%q) with %+v: %q, want %q", tc.opt, tc.env, cfg.healthAddr, tc.want)
		}
	}
}
