package process

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
	"github.com/stargazer/lifecycle/service"
)

// A TLS variable that cannot work is a configuration error found before
// anything dials Redis: ParseEnv names the variable (or REDIS_URL) in a
// *service.ConfigError, and Run exits 2 with that name and the file's path,
// no byte of any file, and no connection made.
func TestBadRedisTLSVariablesExitTwoNamingTheVariableAndTouchNoRedis(t *testing.T) {
	ca := redistest.NewCA(t, "ca")
	dir := t.TempDir()
	pair := ca.Client(t, "client")
	pair.Write(t, filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key"))
	notPEM := filepath.Join(dir, "not.pem")
	redistest.WriteFile(t, notPEM, []byte("not PEM\n"))
	missing := filepath.Join(dir, "missing.pem")
	unreadable := filepath.Join(dir, "unreadable.key")
	redistest.WriteFile(t, unreadable, pair.KeyPEM)
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	_, readErr := os.ReadFile(unreadable)

	for _, tc := range []struct {
		what   string
		env    map[string]string // over the three variables, a good pair and CA
		name   string            // the variable named
		shown  string            // its value shown
		scheme string            // of REDIS_URL; "" unset
		skip   string
	}{
		{what: "missing certificate", env: map[string]string{fleetenv.RedisTLSCert: missing}, name: fleetenv.RedisTLSCert, shown: missing, scheme: "rediss"},
		{what: "missing CA", env: map[string]string{fleetenv.RedisTLSCA: missing}, name: fleetenv.RedisTLSCA, shown: missing, scheme: "rediss"},
		{what: "unreadable key", env: map[string]string{fleetenv.RedisTLSKey: unreadable}, name: fleetenv.RedisTLSKey, shown: unreadable, scheme: "rediss",
			skip: map[bool]string{true: "a file with mode 000 is readable here (running as root): nothing to show"}[readErr == nil]},
		{what: "certificate not PEM", env: map[string]string{fleetenv.RedisTLSCert: notPEM}, name: fleetenv.RedisTLSCert, shown: notPEM, scheme: "rediss"},
		{what: "key not PEM", env: map[string]string{fleetenv.RedisTLSKey: notPEM}, name: fleetenv.RedisTLSKey, shown: notPEM, scheme: "rediss"},
		{what: "CA not PEM", env: map[string]string{fleetenv.RedisTLSCA: notPEM}, name: fleetenv.RedisTLSCA, shown: notPEM, scheme: "rediss"},
		{what: "certificate without key", env: map[string]string{fleetenv.RedisTLSKey: ""}, name: fleetenv.RedisTLSKey, shown: "unset, while SG_REDIS_TLS_CERT is set", scheme: "rediss"},
		{what: "key without certificate", env: map[string]string{fleetenv.RedisTLSCert: ""}, name: fleetenv.RedisTLSCert, shown: "unset, while SG_REDIS_TLS_KEY is set", scheme: "rediss"},
		{what: "redis:// with the variables", name: fleetenv.RedisURL, shown: "use rediss://", scheme: "redis"},
		{what: "REDIS_URL unset with the variables", name: fleetenv.RedisURL, shown: "rediss://"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			mr := miniredis.RunT(t)
			env := map[string]string{fleetenv.RedisTLSCert: pair.CertFile, fleetenv.RedisTLSKey: pair.KeyFile, fleetenv.RedisTLSCA: ca.File()}
			for k, v := range tc.env {
				env[k] = v
			}
			if tc.scheme != "" {
				env[fleetenv.RedisURL] = tc.scheme + "://" + mr.Addr() + "/0"
			}
			_, err := ParseEnv(envOf(env))
			var ce *service.ConfigError
			if !errors.As(err, &ce) || ce.Name != tc.name {
				t.Fatalf("ParseEnv: %v, want a *service.ConfigError naming %s", err, tc.name)
			}
			var stderr bytes.Buffer
			code := Config{Getenv: envOf(env), Stderr: &stderr}.Run(context.Background(), newTestService())
			out := stderr.String()
			if code != ExitConfig {
				t.Fatalf("exit code %d, want %d:\n%s", code, ExitConfig, out)
			}
			if !strings.Contains(out, tc.name+`=`) || !strings.Contains(out, tc.shown) {
				t.Errorf("message does not name %s and %s:\n%s", tc.name, tc.shown, out)
			}
			for _, secret := range [][]byte{pair.KeyPEM, pair.CertPEM} {
				if strings.Contains(out, "-----") || strings.Contains(out, string(secret[30:60])) {
					t.Errorf("message shows a file's contents:\n%s", out)
				}
			}
			if n := mr.TotalConnectionCount(); n != 0 {
				t.Errorf("%d connections reached Redis", n)
			}
		})
	}
}

// Run boots a service to running against a Redis that requires a client
// certificate, with REDIS_URL=rediss://... and the three variables, and
// stops it cleanly.
func TestRunBootsToRunningAgainstARedisThatRequiresAClientCertificate(t *testing.T) {
	s := redistest.TLSServer(t)
	files := s.TLS()
	env := map[string]string{
		fleetenv.RedisURL:     s.URL(),
		fleetenv.RedisTLSCert: files.Client.CertFile,
		fleetenv.RedisTLSKey:  files.Client.KeyFile,
		fleetenv.RedisTLSCA:   files.CA.File(),
		"SG_SERVICE_NAME":     "svc",
		"SG_INSTANCE_ID":      "i-1",
		"SG_BOOT_JITTER":      "0",
		"SG_HEALTH_PORT":      "0",
		"SG_HEALTH_HOST":      "127.0.0.1",
	}
	logs := &lockedWriter{b: &bytes.Buffer{}}
	rec := &recorder{}
	svc := newTestService()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- Config{Getenv: envOf(env), Stderr: logs}.Run(ctx, svc,
			service.WithLogger(logs.logger()),
			service.WithTracerProvider(tracenoop.NewTracerProvider()),
			service.WithMeterProvider(metricnoop.NewMeterProvider()),
			service.WithTransitionObserver(rec))
	}()
	svc.waitRun(t)
	admin := s.Client(t)
	poll(t, func() bool {
		v, err := admin.Get(context.Background(), registry.EntryKey("svc", "i-1")).Result()
		return err == nil && strings.Contains(v, `"status":"running"`)
	}, "the registry entry, written over TLS, says running")
	if strings.Contains(rec.path(), string(phases.Failed)) {
		t.Fatalf("path %s", rec.path())
	}
	cancel()
	select {
	case code := <-done:
		if code != ExitOK {
			t.Fatalf("exit code %d, want %d; log:\n%s", code, ExitOK, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	if !strings.HasSuffix(rec.path(), "stopped") {
		t.Errorf("path %s, want it to end stopped", rec.path())
	}
	if n, err := admin.Exists(context.Background(), registry.EntryKey("svc", "i-1")).Result(); err != nil || n != 0 {
		t.Errorf("entry still there after the stop: %d, %v", n, err)
	}
}
