package fleetenv_test

import (
	"fmt"
	"runtime"
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

// The Sentinel form, as go-redis's ParseFailoverURL reads it: the host and
// the addr= parameters are Sentinels, the URL's credentials are theirs, the
// master's are username= and password=.
func TestNewRedisClientBuildsAFailoverClientForASentinelURL(t *testing.T) {
	const raw = "redis://sen:s3cret@10.0.0.1:26379/2?master_name=mymaster&addr=10.0.0.2:26379&username=app&password=m4ster"
	c, err := fleetenv.NewRedisClient(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fc, ok := c.(*redis.Client)
	if !ok {
		t.Fatalf("client is %T, want the *redis.Client of redis.NewFailoverClient", c)
	}
	o := fc.Options()
	if !o.ContextTimeoutEnabled || o.DialerRetries != 1 || o.DB != 2 || o.Username != "app" || o.Password != "m4ster" {
		t.Errorf("master options: ContextTimeoutEnabled %v, DialerRetries %d, DB %d, user %q, password %q; want true, 1, 2, app, m4ster",
			o.ContextTimeoutEnabled, o.DialerRetries, o.DB, o.Username, o.Password)
	}
	if got, want := fleetenv.RedisAddr(c), "sentinel master mymaster via 10.0.0.1:26379,10.0.0.2:26379"; got != want {
		t.Errorf("RedisAddr = %q, want %q", got, want)
	}
	fo, err := fleetenv.ParseFailoverURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	if fo.MasterName != "mymaster" || fo.SentinelUsername != "sen" || fo.SentinelPassword != "s3cret" ||
		strings.Join(fo.SentinelAddrs, ",") != "10.0.0.1:26379,10.0.0.2:26379" || !fo.ContextTimeoutEnabled || fo.DialerRetries != 1 {
		t.Errorf("failover options: %+v", fo)
	}
	// dialer_retries, when given, is the URL's to set.
	if fo, err := fleetenv.ParseFailoverURL("redis://s:26379?master_name=m&dialer_retries=3"); err != nil || fo.DialerRetries != 3 {
		t.Errorf("dialer_retries=3: %v, %v", fo, err)
	}
	// Cluster and single-server URLs are as before.
	for raw, want := range map[string]string{
		"redis://127.0.0.1:6379/0":                      "*redis.Client 127.0.0.1:6379",
		"redis://10.0.0.1:7000?addr=10.0.0.2:7000":      "*redis.ClusterClient 10.0.0.1:7000,10.0.0.2:7000",
		"rediss://u:p@10.0.0.1:7000?addr=10.0.0.2:7000": "*redis.ClusterClient 10.0.0.1:7000,10.0.0.2:7000",
	} {
		c, err := fleetenv.NewRedisClient(raw)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%T %s", c, fleetenv.RedisAddr(c)); got != want {
			t.Errorf("NewRedisClient(%q): %s, want %s", raw, got, want)
		}
		c.Close()
	}
}

func TestBadRedisURLsAreNamedWithoutTheirPasswords(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"redis://:Zq9pw@s:26379/0?master_name=", "master_name= must be given once, not empty"},
		{"redis://:Zq9pw@s:26379/0?master_name=a&master_name=b", "master_name= must be given once"},
		{"unix://:Zq9pw@/run/sentinel.sock?master_name=m", "unix://: a Sentinel is reached over TCP"},
		{"redis://:Zq9pw@s/0?master_name=m", `the Sentinel "s" has no port`},
		{"redis://s:26379/0?master_name=m&sentinel_password=Zq9pw", "sentinel_password= is not a parameter"},
		{"redis://s:26379/0?master_name=m&sentinel_username=u&password=Zq9pw", "sentinel_username= is not a parameter"},
		{"redis://:Zq9pw@s:26379/0?master_name=m&addr=s2", "unable to parse addr param: s2"},
		{"redis://:Zq9pw@s:26379/0?master_name=m&bogus=1", "unexpected option: bogus"},
		{"redis://:Zq9pw@s:26379/x?master_name=m", "invalid database number"},
		{"redis://s:26379/0?master_name=m&read_timeout=soon&password=Zq9pw", "invalid read_timeout duration"},
		// After a password parameter, go-redis's message could quote part of
		// the password (an unescaped '&' in it): withheld.
		{"redis://s:26379/0?master_name=m&password=Zq9pw&read_timeout=soon", "does not parse from its password parameter on"},
		{"http://:Zq9pw@s:26379/0?master_name=m", `scheme "http"`},
		// A single server takes its password in the userinfo only.
		{"redis://h:6379/0?password=Zq9pw&db=1", "unexpected option: password"},
	} {
		_, err := fleetenv.NewRedisClient(tc.raw)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewRedisClient(%q) = %v, want an error saying %q", tc.raw, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "Zq9pw") {
			t.Errorf("NewRedisClient(%q): %v shows the password", tc.raw, err)
		}
	}
}

// Passwords made of the characters that break URLs, in every place a
// REDIS_URL of each form carries one: an error never shows them.
func TestRedisURLErrorsNeverShowAPassword(t *testing.T) {
	for _, sp := range []string{"%", "%zz", "#", "/", "?", "@", ":", "&", "=", " ", "p@ss#w/rd?"} {
		pw := "Zq9" + sp + "Kx7"
		for _, raw := range []string{
			"redis://sen:" + pw + "@s1:26379/0?master_name=m&addr=s2:26379",
			"redis://s1:26379/0?master_name=m&password=" + pw + "&addr=s2:26379",
			"redis://h1:6379/0?password=" + pw + "&db=1",
			"redis://h1:7000?addr=h2:7000&password=" + pw,
			"rediss://u:" + pw + "@h1:7000?addr=h2:7000",
		} {
			c, err := fleetenv.NewRedisClient(raw)
			if err == nil {
				c.Close()
				continue
			}
			for _, frag := range []string{"Zq9", "Kx7"} {
				if strings.Contains(err.Error(), frag) {
					t.Errorf("NewRedisClient(%q) = %v: shows %q of the password", raw, err, frag)
				}
			}
		}
	}
}

func TestRedisAddrOfAFailoverClientBuiltElsewhereSaysSo(t *testing.T) {
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "m", SentinelAddrs: []string{"127.0.0.1:1"}})
	defer c.Close()
	if got := fleetenv.RedisAddr(c); got != "sentinel master (name unknown)" {
		t.Fatalf("RedisAddr = %q", got)
	}
}

// A program that builds Sentinel clients again and again keeps no name of
// one it dropped.
func TestFailoverClientNamesGoWithTheirClients(t *testing.T) {
	for range 50 {
		c, err := fleetenv.NewRedisClient("redis://127.0.0.1:26379/0?master_name=m")
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for fleetenv.FailoverNames() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d names of dropped failover clients still held", fleetenv.FailoverNames())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // polling interval; the deadline bounds the wait
	}
}
