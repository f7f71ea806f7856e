package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/registry"
)

// rig is a dashboard over a Redis: served by Serve on 127.0.0.1 (the
// timeouts and limits of sgctl dashboard), and its reader running, until
// the test ends.
type rig struct {
	srv  *Server
	http *served
	rdb  redis.UniversalClient
	csrf string // the pages' CSRF token, once post read it
}

// served is where a rig serves.
type served struct {
	URL string // http://127.0.0.1:port
}

func newRig(t testing.TB, rdb redis.UniversalClient, mod func(*Config)) *rig {
	t.Helper()
	cfg := Config{Redis: rdb, Block: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{srv: s, http: serve(t, s), rdb: rdb}
}

// serve runs s (Run and Serve, on 127.0.0.1) until the test ends, and
// returns its address.
func serve(t testing.TB, s *Server) *served {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = s.Run(ctx) }()
	go func() {
		defer wg.Done()
		if err := s.Serve(ctx, ln); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		http.DefaultClient.CloseIdleConnections()
	})
	return &served{URL: "http://" + ln.Addr().String()}
}

func miniRig(t testing.TB, mod func(*Config)) (*rig, *miniredis.Miniredis) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return newRig(t, rdb, mod), mr
}

// put writes an entry as the registry does, its index score and the
// services set, without the registry's name rules (hostile ids included).
func put(t testing.TB, rdb redis.UniversalClient, e registry.Entry) {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	exp := float64(time.Now().Add(30 * time.Second).UnixMilli())
	if err := rdb.Set(ctx, registry.EntryKey(e.Service, e.Instance), b, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.ZAdd(ctx, registry.IndexKey(e.Service), redis.Z{Score: exp, Member: e.Instance})
	rdb.SAdd(ctx, registry.ServicesKey, e.Service)
}

func entry(svc, id, status string) registry.Entry {
	return registry.Entry{Service: svc, Instance: id, Status: status, Host: "h1", PID: 42, Version: "v1",
		StartedAt: time.Now().Add(-time.Minute).UTC(), UpdatedAt: time.Now().UTC(), Control: "signed"}
}

type resp struct {
	code int
	body string
	hdr  http.Header
}

func do(t testing.TB, req *http.Request) resp {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, string(b), res.Header}
}

func (r *rig) get(t testing.TB, path string, hdr ...string) resp {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.http.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(t, req)
}

// post sends what a page of the dashboard sends: with the CSRF token of
// the fleet page, or of the login page when a token is configured (read
// once), unless hdr sets another.
func (r *rig) post(t testing.TB, path, ctype, body string, hdr ...string) resp {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.http.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	if r.csrf == "" {
		r.csrf = pageCSRF(t, r.get(t, "/").body)
	}
	if r.csrf == "" {
		r.csrf = pageCSRF(t, r.get(t, "/login").body)
	}
	req.Header.Set("X-CSRF-Token", r.csrf)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return do(t, req)
}

// pageCSRF returns the CSRF token in a page's config, or in the login
// form's csrf field ("" when it has neither).
func pageCSRF(t testing.TB, page string) string {
	t.Helper()
	if m := regexp.MustCompile(`<input type="hidden" name="csrf" value="([^"]*)">`).FindStringSubmatch(page); m != nil {
		return m[1]
	}
	m := regexp.MustCompile(`(?s)<script type="application/json" id="config">(.*?)</script>`).FindStringSubmatch(page)
	if m == nil {
		return ""
	}
	var cfg struct {
		CSRF string `json:"csrf"`
	}
	if err := json.Unmarshal([]byte(m[1]), &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg.CSRF
}

// logBuffer is a log destination that tests read while the server writes.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, what())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// requireDot skips without Graphviz, unless CI=true: then it fails.
func requireDot(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("dot"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("graphviz dot is not on PATH (apt-get install -y graphviz)")
		}
		t.Skip("graphviz dot is not on PATH: apt-get install -y graphviz to run")
	}
}
