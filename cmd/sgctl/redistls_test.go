package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"

	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/internal/redistest"
)

// sgctl reads the TLS variables as the services do (fleetenv.ParseRedisTLS):
// what cannot work is a configuration error, exit 2, naming the variable
// (and the file's path, never its contents), before Redis is dialled.
func TestBadRedisTLSVariablesExit2NamingTheVariableAndTouchNoRedis(t *testing.T) {
	ca := redistest.NewCA(t, "ca")
	dir := t.TempDir()
	pair := ca.Client(t, "operator")
	pair.Write(t, filepath.Join(dir, "op.pem"), filepath.Join(dir, "op.key"))
	notPEM := filepath.Join(dir, "not.pem")
	redistest.WriteFile(t, notPEM, []byte("not PEM\n"))
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		what   string
		env    map[string]string
		scheme string // of REDIS_URL; "" unset (sgctl's default, redis://)
		want   string
	}{
		{"missing certificate", map[string]string{fleetenv.RedisTLSCert: missing}, "rediss", `SG_REDIS_TLS_CERT="` + missing + `"`},
		{"key not PEM", map[string]string{fleetenv.RedisTLSKey: notPEM}, "rediss", `SG_REDIS_TLS_KEY="` + notPEM + `": no PEM PRIVATE KEY block`},
		{"CA not PEM", map[string]string{fleetenv.RedisTLSCA: notPEM}, "rediss", `SG_REDIS_TLS_CA="` + notPEM + `": no PEM CERTIFICATE block`},
		{"certificate without key", map[string]string{fleetenv.RedisTLSKey: ""}, "rediss", `SG_REDIS_TLS_KEY="": unset, while SG_REDIS_TLS_CERT is set`},
		{"redis:// with the variables", nil, "redis", "REDIS_URL="},
		{"REDIS_URL unset with the variables", nil, "", `REDIS_URL="redis://127.0.0.1:6379/0": SG_REDIS_TLS_CERT, SG_REDIS_TLS_KEY, SG_REDIS_TLS_CA set: use rediss://`},
	} {
		t.Run(tc.what, func(t *testing.T) {
			mr := miniredis.RunT(t)
			env := map[string]string{fleetenv.RedisTLSCert: pair.CertFile, fleetenv.RedisTLSKey: pair.KeyFile, fleetenv.RedisTLSCA: ca.File()}
			for k, v := range tc.env {
				env[k] = v
			}
			if tc.scheme != "" {
				env[fleetenv.RedisURL] = tc.scheme + "://" + mr.Addr() + "/0"
			}
			for _, cmd := range [][]string{{"ps"}, {"watch"}} {
				r := sgctl(t, t.Context(), env, nil, cmd...)
				if r.code != exitUsage || !strings.Contains(r.stderr, "invalid configuration: "+tc.want) {
					t.Errorf("%v: got %d %q, want exit %d saying %q", cmd, r.code, r.stderr, exitUsage, tc.want)
				}
				if tc.scheme == "redis" && !strings.Contains(r.stderr, "use rediss://") {
					t.Errorf("%v: %q does not say to use rediss://", cmd, r.stderr)
				}
				if strings.Contains(r.stderr, "-----") || strings.Contains(r.stderr, string(pair.KeyPEM[30:60])) {
					t.Errorf("%v: %q shows a file's contents", cmd, r.stderr)
				}
			}
			if n := mr.TotalConnectionCount(); n != 0 {
				t.Errorf("%d connections reached Redis", n)
			}
		})
	}
}

// With the three variables sgctl talks to a Redis that requires a client
// certificate; without the certificate Redis refuses it, and sgctl says so
// (exit 3, the server's alert in the message).
func TestSgctlTalksToARedisThatRequiresAClientCertificate(t *testing.T) {
	s := redistest.TLSServer(t)
	files := s.TLS()
	env := map[string]string{
		fleetenv.RedisURL:     s.URL(),
		fleetenv.RedisTLSCert: files.Client.CertFile,
		fleetenv.RedisTLSKey:  files.Client.KeyFile,
		fleetenv.RedisTLSCA:   files.CA.File(),
	}
	if r := sgctl(t, t.Context(), env, nil, "ps"); r.code != exitOK {
		t.Fatalf("ps with the TLS variables: exit %d, %q", r.code, r.stderr)
	}
	delete(env, fleetenv.RedisTLSCert)
	delete(env, fleetenv.RedisTLSKey)
	r := sgctl(t, t.Context(), env, nil, "ps")
	if r.code != exitUnreachable || !strings.Contains(r.stderr, "certificate required") {
		t.Fatalf("ps without the client certificate: exit %d, %q; want %d naming the server's certificate_required alert", r.code, r.stderr, exitUnreachable)
	}
}
