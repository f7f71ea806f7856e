package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
)

// realRedisDown is a client of a real redis-server that answered once and
// was then killed: its pings fail as in production, the address in the
// error ("dial tcp 127.0.0.1:<port>: connect: connection refused").
func realRedisDown(t *testing.T) (*redis.Client, string) {
	t.Helper()
	srv := redistest.Server(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialerRetries: 1, DialerRetryTimeout: time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	if err := rdb.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("ping before the kill: %v", err)
	}
	srv.Kill()
	return rdb, srv.Addr()
}

// /healthz told whoever could reach it where Redis is. By default the
// address is hidden; WithAddresses(true) shows it.
func TestHealthzShowsTheRedisAddressOnlyWhenConfiguredTo(t *testing.T) {
	for _, show := range []bool{false, true} {
		rdb, addr := realRedisDown(t)
		s := newServer(t, newSource("running", time.Now()), WithRedis(rdb, true), WithAddresses(show))
		s.Refresh(context.Background())
		for _, path := range []string{"/healthz", "/readyz"} {
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
			body := rec.Body.String()
			if rec.Code != http.StatusServiceUnavailable || !strings.Contains(body, "connection refused") {
				t.Fatalf("WithAddresses(%v): GET %s = %d %s, want 503 saying why", show, path, rec.Code, body)
			}
			host := strings.Split(addr, ":")[0]
			if got := strings.Contains(body, host); got != show {
				t.Errorf("WithAddresses(%v): GET %s shows %s: %v, want %v:\n%s", show, path, addr, got, show, body)
			}
			if !show && !strings.Contains(body, AddrHidden) {
				t.Errorf("GET %s does not say that an address was hidden:\n%s", path, body)
			}
		}
	}
}

func TestHideAddrsReplacesEveryShapeOfAddressInNetworkErrors(t *testing.T) {
	for in, want := range map[string]string{
		"dial tcp 10.0.0.5:6379: connect: connection refused":                     "dial tcp (address hidden): connect: connection refused",
		"read tcp 10.1.1.1:5555->10.0.0.5:6379: i/o timeout":                      "read tcp (address hidden)->(address hidden): i/o timeout",
		"dial tcp [fd00::5]:6379: connect: connection refused":                    "dial tcp (address hidden): connect: connection refused",
		"dial tcp: lookup redis.internal on 10.96.0.10:53: no such host":          "dial tcp: lookup (address hidden) on (address hidden): no such host",
		"dial tcp redis.internal:6379: i/o timeout":                               "dial tcp (address hidden): i/o timeout",
		"MOVED 3999 10.0.0.7:6379":                                                "MOVED 3999 (address hidden)",
		"x509: certificate is valid for a.example, b.example, not redis.internal": "x509: certificate is valid for (address hidden), not (address hidden)",
		"dial tcp fd00::5: connect: network is unreachable":                       "dial tcp (address hidden): connect: network is unreachable",
		"NOAUTH Authentication required.":                                         "NOAUTH Authentication required.",
		`check "redis:ping" did not return within 2s`:                             `check "redis:ping" did not return within 2s`,
	} {
		if got := hideAddrs(in); got != want {
			t.Errorf("hideAddrs(%q)\n = %q\nwant %q", in, got, want)
		}
	}
}
