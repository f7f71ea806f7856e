package fleetenv_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/internal/redistest"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// tlsEnv is the three variables naming the pair's files and the CA's.
func tlsEnv(p *redistest.Pair, ca *redistest.CA) map[string]string {
	return map[string]string{fleetenv.RedisTLSCert: p.CertFile, fleetenv.RedisTLSKey: p.KeyFile, fleetenv.RedisTLSCA: ca.File()}
}

// writePair issues a client pair from ca and writes it as client.pem and
// client.key in a directory of the test's.
func writePair(t *testing.T, ca *redistest.CA, cn string) *redistest.Pair {
	t.Helper()
	dir := t.TempDir()
	p := ca.Client(t, cn)
	p.Write(t, filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key"))
	return p
}

// noPEM fails the test when msg holds a PEM header or a line of the files'
// base64.
func noPEM(t *testing.T, msg string, files ...[]byte) {
	t.Helper()
	if strings.Contains(msg, "-----") {
		t.Errorf("%q shows a PEM header", msg)
	}
	for _, f := range files {
		for _, line := range strings.Split(string(f), "\n") {
			if len(line) > 16 && !strings.HasPrefix(line, "-----") && strings.Contains(msg, line[:16]) {
				t.Errorf("%q shows the file's contents", msg)
			}
		}
	}
}

func TestRedisTLSIsNilWithoutItsVariables(t *testing.T) {
	rt, err := fleetenv.ParseRedisTLS(envOf(nil))
	if rt != nil || err != nil {
		t.Fatalf("ParseRedisTLS of an empty environment = %v, %v; want nil, nil", rt, err)
	}
	// WithTLS(nil) is no option: a redis:// URL is fine.
	c, err := fleetenv.NewRedisClient("redis://127.0.0.1:6379/0", fleetenv.WithTLS(rt))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.(*redis.Client).Options().TLSConfig != nil {
		t.Error("a TLS configuration without TLS variables or rediss://")
	}
}

func TestRedisTLSCertificateAndKeyGoTogetherNamingTheOneMissing(t *testing.T) {
	ca := redistest.NewCA(t, "ca")
	p := writePair(t, ca, "client")
	for _, tc := range []struct {
		env     map[string]string
		missing string
	}{
		{map[string]string{fleetenv.RedisTLSCert: p.CertFile}, fleetenv.RedisTLSKey},
		{map[string]string{fleetenv.RedisTLSCert: p.CertFile, fleetenv.RedisTLSCA: ca.File()}, fleetenv.RedisTLSKey},
		{map[string]string{fleetenv.RedisTLSKey: p.KeyFile}, fleetenv.RedisTLSCert},
	} {
		_, err := fleetenv.ParseRedisTLS(envOf(tc.env))
		var ve *fleetenv.VarError
		if !errors.As(err, &ve) || ve.Name != tc.missing || !strings.Contains(err.Error(), "unset") {
			t.Errorf("%v: %v, want a *VarError naming %s as unset", tc.env, err, tc.missing)
		}
	}
	// The CA alone is a server check without a client certificate.
	rt, err := fleetenv.ParseRedisTLS(envOf(map[string]string{fleetenv.RedisTLSCA: ca.File()}))
	if err != nil || rt == nil {
		t.Fatalf("CA alone: %v, %v", rt, err)
	}
	if c := rt.TLSConfig(nil); c.RootCAs == nil || c.GetClientCertificate != nil || c.MinVersion < tls.VersionTLS12 {
		t.Errorf("CA alone: RootCAs %v, GetClientCertificate set %v, MinVersion %x", c.RootCAs != nil, c.GetClientCertificate != nil, c.MinVersion)
	}
}

// Every file is loaded by ParseRedisTLS: what does not load is named with
// its variable and its path, and no byte of any file is shown.
func TestRedisTLSFilesThatDoNotLoadAreNamedWithTheirVariableAndPath(t *testing.T) {
	ca := redistest.NewCA(t, "ca")
	good := writePair(t, ca, "client")
	other := writePair(t, ca, "other")
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	notPEM := filepath.Join(dir, "not.pem")
	redistest.WriteFile(t, notPEM, []byte("this is not PEM\n"))
	garbled := filepath.Join(dir, "garbled.pem")
	redistest.WriteFile(t, garbled, []byte("-----BEGIN CERTIFICATE-----\nTUlJQmFkQ2VydA==\n-----END CERTIFICATE-----\n"))
	now := time.Now()
	expired := ca.ClientValid(t, "expired", now.Add(-2*time.Hour), now.Add(-time.Hour))
	expired.Write(t, filepath.Join(dir, "expired.pem"), filepath.Join(dir, "expired.key"))
	with := func(k, v string) map[string]string {
		env := tlsEnv(good, ca)
		env[k] = v
		return env
	}
	for _, tc := range []struct {
		what string
		env  map[string]string
		name string // the variable named
		path string
		want string
	}{
		{"missing certificate", with(fleetenv.RedisTLSCert, missing), fleetenv.RedisTLSCert, missing, "no such file"},
		{"missing key", with(fleetenv.RedisTLSKey, missing), fleetenv.RedisTLSKey, missing, "no such file"},
		{"missing CA", with(fleetenv.RedisTLSCA, missing), fleetenv.RedisTLSCA, missing, "no such file"},
		{"certificate not PEM", with(fleetenv.RedisTLSCert, notPEM), fleetenv.RedisTLSCert, notPEM, "no PEM CERTIFICATE block"},
		{"certificate PEM of no certificate", with(fleetenv.RedisTLSCert, garbled), fleetenv.RedisTLSCert, garbled, "does not parse"},
		{"the key given as the certificate", with(fleetenv.RedisTLSCert, good.KeyFile), fleetenv.RedisTLSCert, good.KeyFile, "no PEM CERTIFICATE block"},
		{"key not PEM", with(fleetenv.RedisTLSKey, notPEM), fleetenv.RedisTLSKey, notPEM, "no PEM PRIVATE KEY block"},
		{"the certificate given as the key", with(fleetenv.RedisTLSKey, good.CertFile), fleetenv.RedisTLSKey, good.CertFile, "no PEM PRIVATE KEY block"},
		{"another certificate's key", with(fleetenv.RedisTLSKey, other.KeyFile), fleetenv.RedisTLSKey, other.KeyFile, "not the key of the certificate in SG_REDIS_TLS_CERT"},
		{"CA not PEM", with(fleetenv.RedisTLSCA, notPEM), fleetenv.RedisTLSCA, notPEM, "no PEM CERTIFICATE block"},
		{"CA PEM of no certificate", with(fleetenv.RedisTLSCA, garbled), fleetenv.RedisTLSCA, garbled, "does not parse"},
		{"expired certificate", map[string]string{fleetenv.RedisTLSCert: expired.CertFile, fleetenv.RedisTLSKey: expired.KeyFile}, fleetenv.RedisTLSCert, expired.CertFile, "expired at"},
	} {
		_, err := fleetenv.ParseRedisTLS(envOf(tc.env))
		var ve *fleetenv.VarError
		if !errors.As(err, &ve) || ve.Name != tc.name || ve.Value != tc.path || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a *VarError naming %s=%q and saying %q", tc.what, err, tc.name, tc.path, tc.want)
			continue
		}
		noPEM(t, err.Error(), good.CertPEM, good.KeyPEM, other.KeyPEM, ca.PEM())
	}
	t.Run("unreadable", func(t *testing.T) {
		p := writePair(t, ca, "client")
		if err := os.Chmod(p.KeyFile, 0); err != nil {
			t.Fatal(err)
		}
		if f, err := os.Open(p.KeyFile); err == nil {
			f.Close()
			t.Skip("a file with mode 000 is readable here (running as root, or with CAP_DAC_OVERRIDE): nothing to show")
		}
		_, err := fleetenv.ParseRedisTLS(envOf(tlsEnv(p, ca)))
		var ve *fleetenv.VarError
		if !errors.As(err, &ve) || ve.Name != fleetenv.RedisTLSKey || ve.Value != p.KeyFile || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%v, want a *VarError naming %s=%q, permission denied", err, fleetenv.RedisTLSKey, p.KeyFile)
		}
	})
}

// The variables need TLS: with redis:// or unix:// the URL is refused,
// never upgraded; each form of rediss:// gets the configuration.
func TestRedisTLSNeedsARedissURLAndAppliesToEachForm(t *testing.T) {
	ca := redistest.NewCA(t, "ca")
	rt, err := fleetenv.ParseRedisTLS(envOf(tlsEnv(writePair(t, ca, "client"), ca)))
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range []string{
		"redis://127.0.0.1:6379/0",
		"redis://127.0.0.1:7000?addr=127.0.0.1:7001",
		"redis://127.0.0.1:26379/0?master_name=m",
		"unix:///run/redis.sock",
	} {
		_, err := fleetenv.NewRedisClient(raw, fleetenv.WithTLS(rt))
		if err == nil || !strings.Contains(err.Error(), "use rediss://") || !strings.Contains(err.Error(), fleetenv.RedisTLSCert) {
			t.Errorf("NewRedisClient(%q) with the TLS variables = %v, want an error saying to use rediss:// and naming the variables", raw, err)
		}
	}
	check := func(form string, c *tls.Config, serverName string) {
		t.Helper()
		if c == nil || c.GetClientCertificate == nil || c.RootCAs == nil || c.ServerName != serverName || c.MinVersion < tls.VersionTLS12 {
			t.Errorf("%s: TLS configuration %+v, want the client certificate, the CA and ServerName %q", form, c, serverName)
		}
	}
	one, err := fleetenv.NewRedisClient("rediss://cache.internal:6380/0", fleetenv.WithTLS(rt))
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	check("one server", one.(*redis.Client).Options().TLSConfig, "cache.internal")
	cl, err := fleetenv.NewRedisClient("rediss://node1:7000?addr=node2:7000", fleetenv.WithTLS(rt))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	check("cluster", cl.(*redis.ClusterClient).Options().TLSConfig, "node1")
	// The failover client's options are the master's; go-redis gives the
	// Sentinels' connections the same TLSConfig (sentinel.go,
	// sentinelOptions), ServerName (the first Sentinel's host) included.
	fo, err := fleetenv.NewRedisClient("rediss://sentinel1:26379/0?master_name=m&addr=sentinel2:26379", fleetenv.WithTLS(rt))
	if err != nil {
		t.Fatal(err)
	}
	defer fo.Close()
	check("sentinel", fo.(*redis.Client).Options().TLSConfig, "sentinel1")
	// skip_verify stays the URL's to set.
	sv, err := fleetenv.NewRedisClient("rediss://h:6380/0?skip_verify=true", fleetenv.WithTLS(rt))
	if err != nil {
		t.Fatal(err)
	}
	defer sv.Close()
	if !sv.(*redis.Client).Options().TLSConfig.InsecureSkipVerify {
		t.Error("skip_verify=true lost")
	}
}

// syncLog is a slog handler's buffer, safe for concurrent writes.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// tlsClient is the client NewRedisClient builds from url and env, closed by
// the test's cleanup, and its RedisTLS logging to log.
func tlsClient(t *testing.T, url string, env map[string]string, log *syncLog) (redis.UniversalClient, *fleetenv.RedisTLS) {
	t.Helper()
	rt, err := fleetenv.ParseRedisTLS(envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	if log != nil {
		rt.SetLogger(slog.New(slog.NewTextHandler(log, nil)))
	}
	c, err := fleetenv.NewRedisClient(url, fleetenv.WithTLS(rt))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, rt
}

func TestAClientFromTheTLSVariablesTalksToARedisThatRequiresACertificate(t *testing.T) {
	s := redistest.TLSServer(t)
	files := s.TLS()
	ctx := context.Background()
	c, rt := tlsClient(t, s.URL(), tlsEnv(files.Client, files.CA), nil)
	for range 3 {
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatalf("PING %s with %s, %s and %s set: %v", s.URL(), fleetenv.RedisTLSCert, fleetenv.RedisTLSKey, fleetenv.RedisTLSCA, err)
		}
	}
	// Without the certificate (the CA alone), the server refuses the
	// handshake: its certificate_required alert.
	bare, _ := tlsClient(t, s.URL(), map[string]string{fleetenv.RedisTLSCA: files.CA.File()}, nil)
	if err := bare.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("PING without a client certificate: %v, want the server's certificate_required alert", err)
	}
	// Without the CA, the server's certificate (from the test's CA) is not
	// trusted by the system's roots.
	noCA, _ := tlsClient(t, s.URL(), map[string]string{fleetenv.RedisTLSCert: files.Client.CertFile, fleetenv.RedisTLSKey: files.Client.KeyFile}, nil)
	if err := noCA.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("PING without the CA: %v, want the server's certificate refused", err)
	}
	// New connections with unchanged files read them no more.
	if err := s.Client(t).ClientKillByFilter(ctx, "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after its connection was killed: %v", err)
	}
	if n := fleetenv.PairLoads(rt); n != 1 {
		t.Errorf("the pair was loaded %d times, want once (at parse): unchanged files are not read again", n)
	}
}

// A certificate rotated on disk is presented from the next connection on,
// without a new client.
//
// How the test knows the new certificate was presented: the new pair is
// issued by a second CA. The server first trusts both CAs (its
// tls-ca-cert-file, changed at run time with CONFIG SET), then only the
// second: from then on a handshake with the old certificate is refused
// ("unknown certificate authority", checked with a client of the old pair),
// so a command that succeeds on a new connection proves the client
// presented the new one. Its connections are dropped with CLIENT KILL from
// an admin connection opened before.
//
// On the way, the rotation is caught half done: the certificate replaced,
// the key not yet. The client then presents the old pair (still trusted) and
// logs one warning, naming the key's variable and path, and no PEM.
func TestARotatedCertificateIsPresentedAtTheNextConnectionWithoutARestart(t *testing.T) {
	s := redistest.TLSServer(t)
	files := s.TLS()
	ctx := context.Background()
	admin := s.Client(t)
	ca2 := redistest.NewCA(t, "second CA")
	dir := t.TempDir()
	both := filepath.Join(dir, "both.pem")
	redistest.WriteFile(t, both, append(files.CA.PEM(), ca2.PEM()...))
	if err := admin.ConfigSet(ctx, "tls-ca-cert-file", both).Err(); err != nil {
		t.Fatal(err)
	}

	old := writePair(t, files.CA, "before rotation")
	var log syncLog
	c, rt := tlsClient(t, s.URL(), tlsEnv(old, files.CA), &log)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING before the rotation: %v", err)
	}
	kill := func() {
		t.Helper()
		if err := admin.ClientKillByFilter(ctx, "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
			t.Fatal(err)
		}
	}

	// Half a rotation: the new certificate, the old key.
	next := ca2.Client(t, "after rotation")
	redistest.WriteFile(t, old.CertFile, next.CertPEM)
	kill()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING mid-rotation (the old pair should serve): %v", err)
	}
	kill()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING mid-rotation, again: %v", err)
	}
	warn := log.String()
	if strings.Count(warn, "level=WARN") != 1 || !strings.Contains(warn, fleetenv.RedisTLSKey) || !strings.Contains(warn, old.KeyFile) {
		t.Errorf("mid-rotation log, want one warning naming %s and %s:\n%s", fleetenv.RedisTLSKey, old.KeyFile, warn)
	}
	noPEM(t, warn, old.CertPEM, old.KeyPEM, next.CertPEM, next.KeyPEM)

	// The rest of it; then only the second CA is trusted.
	redistest.WriteFile(t, old.KeyFile, next.KeyPEM)
	if err := admin.ConfigSet(ctx, "tls-ca-cert-file", ca2.File()).Err(); err != nil {
		t.Fatal(err)
	}
	cfg := files.ClientConfig(t)
	cfg.Certificates = []tls.Certificate{old.TLSCertificate(t)}
	withOld := redis.NewClient(&redis.Options{Addr: s.Addr(), TLSConfig: cfg, MaxRetries: -1})
	defer withOld.Close()
	if err := withOld.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Fatalf("a new connection with the old certificate: %v, want it refused", err)
	}
	kill()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING on a new connection after the rotation: %v (the old certificate presented?)", err)
	}
	if n := fleetenv.PairLoads(rt); n != 2 {
		t.Errorf("the pair was loaded %d times, want twice (at parse, after the rotation)", n)
	}
	if !strings.Contains(log.String(), "client certificate reloaded") || !strings.Contains(log.String(), "after rotation") {
		t.Errorf("no reload logged:\n%s", log.String())
	}
	t.Logf("the client's log:\n%s", log.String())
}

// The server's CA rotated: the server now presents a certificate from a CA
// that SG_REDIS_TLS_CA does not hold. The CA bundle is read once, at start:
// connections already open go on; every new one fails verification at
// once, naming the cause, until the process starts again with a bundle
// that holds the new CA.
func TestAServerCertificateFromANewCAFailsNewConnectionsUntilARestartWithTheNewBundle(t *testing.T) {
	s := redistest.TLSServer(t)
	files := s.TLS()
	ctx := context.Background()
	admin := s.Client(t)
	c, _ := tlsClient(t, s.URL(), tlsEnv(files.Client, files.CA), nil)
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	ca2 := redistest.NewCA(t, "new server CA")
	srv2 := ca2.Server(t)
	if err := admin.Do(ctx, "CONFIG", "SET", "tls-cert-file", srv2.CertFile, "tls-key-file", srv2.KeyFile).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING on the connection open before the server's new certificate: %v", err)
	}
	if err := admin.ClientKillByFilter(ctx, "TYPE", "normal", "SKIPME", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err := c.Ping(ctx).Err()
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("PING on a new connection: %v, want the server's certificate refused", err)
	}
	// A restart with both CAs in the bundle (the usual way through a CA
	// rotation) trusts the server again.
	bundle := filepath.Join(t.TempDir(), "bundle.pem")
	redistest.WriteFile(t, bundle, append(files.CA.PEM(), ca2.PEM()...))
	env := tlsEnv(files.Client, files.CA)
	env[fleetenv.RedisTLSCA] = bundle
	restarted, _ := tlsClient(t, s.URL(), env, nil)
	if err := restarted.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after a restart with both CAs: %v", err)
	}
	t.Logf("after the server's CA changed, a PING on a new connection failed in %v (%v); a client started with both CAs in %s talks to it", took, err, fleetenv.RedisTLSCA)
}
