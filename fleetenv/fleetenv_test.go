package fleetenv_test

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/fleetenv"
)

func TestOneRulePerIdentifier(t *testing.T) {
	for _, tc := range []struct {
		what  string
		check func(string) error
		ok    []string
		bad   []string
	}{
		{"service", fleetenv.ValidateService,
			[]string{"demo", "checkout-api", "a.b_c", "0", strings.Repeat("s", 63)},
			[]string{"", "Demo", "a{b}", "a:b", "a b", "-a", "x\ny", strings.Repeat("s", 64)}},
		{"instance", fleetenv.ValidateInstance,
			[]string{"i-1", "Host-01.zone_a", strings.Repeat("i", 128)},
			[]string{"", "a:b", "a{b", "_a", "a\x1bb", strings.Repeat("i", 129)}},
		{"advertise addr", fleetenv.ValidateAdvertiseAddr,
			[]string{"127.0.0.1:8080", "[::1]:443", "api-1.internal:8080", "localhost:1", "h:65535"},
			[]string{"", "8080", ":8080", "0.0.0.0:8080", "[::]:80", "h:0", "h:65536", "h:http", "a b:80", "h/x:80", "::1:80", "user@h:80"}},
		{"op", fleetenv.ValidateOp,
			[]string{"restart", "cache.flush", "re-index_2"},
			[]string{"", "Bad Op", "Restart", "a:b", strings.Repeat("o", 65)}},
	} {
		for _, v := range tc.ok {
			if err := tc.check(v); err != nil {
				t.Errorf("%s %q refused: %v", tc.what, v, err)
			}
		}
		for _, v := range tc.bad {
			if err := tc.check(v); err == nil {
				t.Errorf("%s %q accepted", tc.what, v)
			}
		}
	}
}

func TestServiceTTLIsAtLeastThreeSeconds(t *testing.T) {
	for v, want := range map[string]time.Duration{"30s": 30 * time.Second, "3s": 3 * time.Second, "1m": time.Minute} {
		if got, err := fleetenv.ParseServiceTTL(v); err != nil || got != want {
			t.Errorf("ParseServiceTTL(%q) = %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"", "0", "2s", "-30s", "forever", "30"} {
		if _, err := fleetenv.ParseServiceTTL(v); err == nil || !strings.Contains(err.Error(), "3s") {
			t.Errorf("ParseServiceTTL(%q) = %v, want an error naming the 3s minimum", v, err)
		}
	}
}

func TestNewRedisClientHonoursDeadlinesAndDialsOnce(t *testing.T) {
	c, err := fleetenv.NewRedisClient("redis://:secret@127.0.0.1:6379/0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	o := c.(*redis.Client).Options()
	if !o.ContextTimeoutEnabled || o.DialerRetries != 1 {
		t.Errorf("ContextTimeoutEnabled %v, DialerRetries %d; want true, 1", o.ContextTimeoutEnabled, o.DialerRetries)
	}
	cl, err := fleetenv.NewRedisClient("redis://u:secret@10.0.0.1:7000?addr=10.0.0.2:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if co := cl.(*redis.ClusterClient).Options(); !co.ContextTimeoutEnabled || co.DialerRetries != 1 {
		t.Errorf("cluster: ContextTimeoutEnabled %v, DialerRetries %d; want true, 1", co.ContextTimeoutEnabled, co.DialerRetries)
	}
	if got := fleetenv.RedisAddr(cl); got != "10.0.0.1:7000,10.0.0.2:7000" {
		t.Errorf("RedisAddr = %q", got)
	}
	for _, raw := range []string{"http://127.0.0.1:6379", "redis://u:p%ss@host:6379", "redis://127.0.0.1:6379/notadb"} {
		if _, err := fleetenv.NewRedisClient(raw); err == nil || strings.Contains(err.Error(), "p%ss") {
			t.Errorf("NewRedisClient(%q) = %v, want an error without the password", raw, err)
		}
	}
}

func TestRedisAddrLeavesOutCredentials(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "user:s3cret@127.0.0.1:1"})
	defer c.Close()
	if got := fleetenv.RedisAddr(c); got != "127.0.0.1:1" {
		t.Fatalf("RedisAddr = %q, want the address without user info", got)
	}
}
