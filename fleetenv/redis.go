package fleetenv

import (
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"weak"

	"github.com/redis/go-redis/v9"
)

// NewRedisClient builds a client from a REDIS_URL. It does not connect. Three
// forms, told apart by the query:
//
//   - one server: redis://[user:pass@]host:6379/0, rediss://..., or
//     unix://[user:pass@]/path/redis.sock;
//   - a Redis Cluster: addr= parameters name more nodes,
//     redis://[user:pass@]node1:6379?addr=node2:6379&addr=node3:6379
//     (redis.ParseClusterURL);
//   - a master behind Sentinels: master_name= names the master, the host and
//     any addr= parameters are Sentinels,
//     redis://[user:pass@]sentinel1:26379/0?master_name=NAME&addr=sentinel2:26379
//     (redis.ParseFailoverURL). As go-redis reads this form, the URL's user
//     and password authenticate to the Sentinels; the master's are the
//     username= and password= parameters. Each Sentinel is named with its
//     port.
//
// Every client honours context deadlines (ContextTimeoutEnabled), so that a
// caller's deadline bounds every call, retries included, and dials once per
// attempt (DialerRetries 1, unless a cluster or Sentinel URL sets
// dialer_retries): go-redis's default of five dials 100ms apart, times four
// attempts, makes a refused connection cost 1.7s instead of milliseconds. A
// Sentinel client asks the Sentinels with the same settings.
//
// TLS: rediss:// makes every connection TLS. WithTLS adds a client
// certificate and a CA bundle (RedisTLS); the URL must then be rediss://:
// redis:// or unix:// is an error, never silently upgraded. go-redis v9
// gives one TLS configuration to every connection of a client: in the
// Cluster form to every node, seeds and discovered ones alike; in the
// Sentinel form to the Sentinels and to the master (and replicas) they name.
// Its ServerName is the URL's host (the first Sentinel's, in the Sentinel
// form), so every server's certificate must be valid for that name or IP
// address (skip_verify=true checks nothing: do not use it).
//
// Its errors never quote the URL: a password cannot leak through them.
func NewRedisClient(raw string, opts ...ClientOption) (redis.UniversalClient, error) {
	var cfg clientConfig
	for _, o := range opts {
		o.apply(&cfg)
	}
	// Not url.Parse: its error quotes the URL, password included; and a URL
	// whose password holds an unescaped '#' or '/' would parse with part of
	// the password as the host.
	u, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix" {
		return nil, fmt.Errorf("scheme %q: want redis://, rediss:// or unix://", u.Scheme)
	}
	if cfg.tls != nil && u.Scheme != "rediss" {
		return nil, fmt.Errorf("%s set: use rediss:// (a %s:// URL is not encrypted, and is not upgraded to TLS)", cfg.tls.vars(), u.Scheme)
	}
	q := u.Query()
	switch {
	case q.Has("master_name"):
		opt, err := parseFailoverURL(raw)
		if err != nil {
			return nil, err
		}
		opt.TLSConfig = cfg.tls.TLSConfig(opt.TLSConfig)
		c := redis.NewFailoverClient(opt)
		remember(c, fmt.Sprintf("sentinel master %s via %s", opt.MasterName, strings.Join(opt.SentinelAddrs, ",")))
		return c, nil
	case q.Has("addr"):
		opt, err := parseOptions(raw, redis.ParseClusterURL)
		if err != nil {
			return nil, err
		}
		opt.ContextTimeoutEnabled = true
		if !q.Has("dialer_retries") {
			opt.DialerRetries = 1
		}
		opt.TLSConfig = cfg.tls.TLSConfig(opt.TLSConfig)
		return redis.NewClusterClient(opt), nil
	}
	opt, err := parseOptions(raw, redis.ParseURL)
	if err != nil {
		return nil, err
	}
	opt.ContextTimeoutEnabled = true
	opt.DialerRetries = 1
	opt.TLSConfig = cfg.tls.TLSConfig(opt.TLSConfig)
	return redis.NewClient(opt), nil
}

// A ClientOption configures NewRedisClient.
type ClientOption interface{ apply(*clientConfig) }

type clientConfig struct {
	tls *RedisTLS
}

type optionFunc func(*clientConfig)

func (f optionFunc) apply(c *clientConfig) { f(c) }

// WithTLS makes the client verify servers with t's CA and present t's client
// certificate, on every connection (see NewRedisClient and RedisTLS); the
// URL must be rediss://. A nil t (ParseRedisTLS's when none of its
// variables is set) is ignored.
func WithTLS(t *RedisTLS) ClientOption {
	return optionFunc(func(c *clientConfig) {
		if t != nil {
			c.tls = t
		}
	})
}

// parseOptions runs parse, one of go-redis's URL parsers, on raw, which has
// passed ParseURL. go-redis's errors quote the query's names and values, and
// a password parameter whose value holds an unescaped '&' becomes names and
// values of its own: when raw has a password parameter (password=,
// sentinel_password=, any name ending in password), an error is shown only if
// the query before that parameter makes it too.
func parseOptions[T any](raw string, parse func(string) (T, error)) (T, error) {
	opt, err := parse(raw)
	if err == nil {
		return opt, nil
	}
	var zero T
	i, name := passwordParam(raw)
	if i < 0 {
		return zero, err
	}
	if _, err := parse(raw[:i]); err != nil {
		return zero, err
	}
	// The parameter itself may be what this form does not take (a single
	// server's password goes in the userinfo): ask with a value of our own.
	if _, err := parse(raw[:i+1] + url.QueryEscape(name) + "=x"); err != nil {
		return zero, err
	}
	return zero, errors.New("the query does not parse from its password parameter on " +
		"(go-redis's message is withheld: it could show part of the password); " +
		"escape '&' in a password as %26")
}

// passwordParam returns the index in raw of the '?' or '&' before the first
// query parameter whose name ends in "password" (any case), and that name; or
// -1.
func passwordParam(raw string) (int, string) {
	q := strings.IndexByte(raw, '?')
	if q < 0 {
		return -1, ""
	}
	query, _, _ := strings.Cut(raw[q+1:], "#")
	at := q
	for seg := range strings.SplitSeq(query, "&") {
		name, _, _ := strings.Cut(seg, "=")
		if n, err := url.QueryUnescape(name); err == nil {
			name = n
		}
		if strings.HasSuffix(strings.ToLower(name), "password") {
			return at, name
		}
		at += len(seg) + 1
	}
	return -1, ""
}

// parseFailoverURL reads the Sentinel form of a REDIS_URL (it has
// master_name=) into the options NewRedisClient builds its client with. raw
// has passed ParseURL.
func parseFailoverURL(raw string) (*redis.FailoverOptions, error) {
	u, _ := ParseURL(raw)
	q := u.Query()
	const form = "redis://[user:pass@]sentinel:26379/0?master_name=NAME&addr=sentinel2:26379"
	if u.Scheme == "unix" {
		return nil, fmt.Errorf("master_name= with unix://: a Sentinel is reached over TCP; want %s", form)
	}
	if names := q["master_name"]; len(names) != 1 || names[0] == "" {
		return nil, fmt.Errorf("master_name= must be given once, not empty: the name the Sentinels monitor the master under; want %s", form)
	}
	for _, k := range []string{"sentinel_password", "sentinel_username"} {
		if q.Has(k) {
			return nil, fmt.Errorf("%s= is not a parameter: the Sentinels' user and password go before the host (redis://user:pass@sentinel:26379), the master's in username= and password=", k)
		}
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("the Sentinel %q has no port: name each Sentinel with its port (26379 by default); want %s", u.Hostname(), form)
	}
	opt, err := parseOptions(raw, redis.ParseFailoverURL)
	if err != nil {
		return nil, fmt.Errorf("sentinel URL: %w", err)
	}
	opt.ContextTimeoutEnabled = true
	if !q.Has("dialer_retries") {
		opt.DialerRetries = 1
	}
	return opt, nil
}

// failovers holds the names of the failover clients NewRedisClient built, for
// RedisAddr: go-redis keeps a failover client's master name and Sentinels to
// itself (its Options say only "FailoverClient"). The key is weak and an entry
// goes with its client, so a program that builds clients in a loop leaks
// nothing.
var failovers sync.Map // weak.Pointer[redis.Client] -> string

func remember(c *redis.Client, name string) {
	k := weak.Make(c)
	failovers.Store(k, name)
	runtime.AddCleanup(c, func(k weak.Pointer[redis.Client]) { failovers.Delete(k) }, k)
}

// failoverAddr is what go-redis puts in a failover client's Options().Addr.
const failoverAddr = "FailoverClient"

// RedisAddr names the server(s) of c for errors and logs, without
// credentials: "127.0.0.1:6379", "unix:/run/redis.sock", the seeds of a
// cluster or ring "a:1,b:2", or, for a failover client NewRedisClient built,
// "sentinel master NAME via s1:26379,s2:26379" (a failover client built
// elsewhere is "sentinel master (name unknown)").
func RedisAddr(c redis.UniversalClient) string {
	var addrs []string
	switch c := c.(type) {
	case *redis.Client:
		if name, ok := failovers.Load(weak.Make(c)); ok {
			return name.(string)
		}
		o := c.Options()
		switch {
		case o.Network == "unix":
			addrs = []string{"unix:" + o.Addr}
		case o.Addr == failoverAddr:
			return "sentinel master (name unknown)"
		default:
			addrs = []string{o.Addr}
		}
	case *redis.ClusterClient:
		addrs = slices.Clone(c.Options().Addrs)
	case *redis.Ring:
		for _, a := range c.Options().Addrs {
			addrs = append(addrs, a)
		}
		slices.Sort(addrs)
	}
	if len(addrs) == 0 {
		return "(address unknown)"
	}
	for i, a := range addrs {
		// "user:secret@host:port" becomes "host:port".
		if j := strings.LastIndexByte(a, '@'); j >= 0 {
			addrs[i] = a[j+1:]
		}
	}
	return strings.Join(addrs, ",")
}
