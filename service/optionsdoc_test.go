package service

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The package doc marks the options the environment overrides under Main,
// "WithX (VARIABLE)". Each mark is true: the option's value, then WithEnv
// with the variable's (as Main gives it, last), leaves the variable's; and
// every mark in the doc is one of these.
func TestTheOptionsThePackageDocMarksAreOverriddenByTheirVariable(t *testing.T) {
	envClient := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	optClient := redis.NewClient(&redis.Options{Addr: "127.0.0.1:2"})
	defer envClient.Close()
	defer optClient.Close()
	cases := []struct {
		mark string // as the doc writes it
		opt  Option
		env  Env
		got  func(c *config) any
		want any
	}{
		{"WithServiceName (SG_SERVICE_NAME)", WithServiceName("opt"), Env{ServiceName: "env"}, func(c *config) any { return c.name }, "env"},
		{"WithInstanceID (SG_INSTANCE_ID)", WithInstanceID("opt"), Env{InstanceID: "env"}, func(c *config) any { return c.instance }, "env"},
		{"WithAdvertiseAddr (SG_ADVERTISE_ADDR)", WithAdvertiseAddr("opt:1"), Env{AdvertiseAddr: "env:2"}, func(c *config) any { return c.advertiseAddr }, "env:2"},
		{"WithRedis (REDIS_URL)", WithRedis(optClient), Env{Redis: envClient}, func(c *config) any { return c.redis }, redis.UniversalClient(envClient)},
		{"WithRedisRequired (SG_REDIS_REQUIRED)", WithRedisRequired(true), Env{RedisRequiredSet: true}, func(c *config) any { return c.redisRequired }, false},
		{"WithRedisTimeout (SG_REDIS_TIMEOUT)", WithRedisTimeout(time.Second), Env{RedisTimeout: time.Minute, RedisTimeoutSet: true}, func(c *config) any { return c.redisTimeout }, time.Minute},
		{"WithServiceTTL (SG_SERVICE_TTL)", WithServiceTTL(time.Minute), Env{ServiceTTL: time.Hour, ServiceTTLSet: true}, func(c *config) any { return c.ttl }, time.Hour},
		{"WithControlKeys (SG_CONTROL_KEY)", WithControlKeys([]byte("opt")), Env{ControlKeys: [][]byte{[]byte("env")}}, func(c *config) any { return string(c.controlKeys[0]) }, "env"},
		{"WithControlInsecure (SG_CONTROL_INSECURE)", WithControlInsecure(true), Env{ControlInsecureSet: true}, func(c *config) any { return c.controlInsecure }, false},
		{"WithBootJitter (SG_BOOT_JITTER)", WithBootJitter(time.Second), Env{BootJitterSet: true}, func(c *config) any { return c.jitter }, time.Duration(0)},
		{"WithBootTimeout (SG_BOOT_TIMEOUT)", WithBootTimeout(time.Second), Env{BootTimeoutSet: true}, func(c *config) any { return c.bootTimeout }, time.Duration(0)},
		{"WithDrainDelay (SG_DRAIN_DELAY)", WithDrainDelay(time.Second), Env{DrainDelay: 2 * time.Second, DrainDelaySet: true}, func(c *config) any { return c.drainDelay }, 2 * time.Second},
		{"WithHealthAddr (SG_HEALTH_HOST, SG_HEALTH_PORT)", WithHealthAddr("10.0.0.1:8080"), Env{HealthHost: "127.0.0.1", HealthHostSet: true, HealthPort: 9, HealthPortSet: true},
			func(c *config) any { return c.healthAddr }, "127.0.0.1:9"},
	}
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	// The doc comment as one line of text.
	text := strings.Join(strings.Fields(strings.ReplaceAll(string(doc), "//", " ")), " ")
	var marks []string
	for _, tc := range cases {
		marks = append(marks, tc.mark)
		if !strings.Contains(text, tc.mark) {
			t.Errorf("the package doc does not mark %s", tc.mark)
		}
		c := defaultConfig()
		tc.opt.apply(&c)
		WithEnv(tc.env).apply(&c)
		if got := tc.got(&c); got != tc.want {
			t.Errorf("%s: %v after the option and WithEnv, want the variable's %v", tc.mark, got, tc.want)
		}
	}
	for _, m := range regexp.MustCompile(`With\w+ \((?:SG_|REDIS_URL)[^)]*\)`).FindAllString(text, -1) {
		if !slices.Contains(marks, m) {
			t.Errorf("the package doc marks %s, which no case here checks", m)
		}
	}
}
