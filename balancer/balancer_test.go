package balancer_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/balancer"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// backend is a real HTTP server on loopback that answers with its name and
// counts what it received.
type backend struct {
	name string
	srv  *httptest.Server
	mu   sync.Mutex
	hits int
	body []string // request bodies received
	host []string // Host headers received
}

func newBackend(t *testing.T, name string) *backend {
	b := &backend{name: name}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.hits++
		b.body = append(b.body, string(body))
		b.host = append(b.host, r.Host)
		b.mu.Unlock()
		io.WriteString(w, name)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backend) addr() string { return strings.TrimPrefix(b.srv.URL, "http://") }

func (b *backend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hits
}

// fleet registers one running instance per address (id -> addr; "" for an
// instance that advertises none) and returns a synced watcher of them.
func fleet(t *testing.T, instances map[string]string) *registry.Watcher { return fleetB(t, instances) }

func fleetB(t testing.TB, instances map[string]string) *registry.Watcher {
	t.Helper()
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { c.Close() })
	reg := registry.New(c, registry.WithTTL(time.Hour))
	for id, addr := range instances {
		if err := reg.Register(t.Context(), registry.Entry{Service: "api", Instance: id, Status: "running", Addr: addr}); err != nil {
			t.Fatal(err)
		}
	}
	w, err := reg.Watch("api")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if err := w.WaitSynced(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := len(w.Running()); n != len(instances) {
		t.Fatalf("watcher sees %d instances, want %d", n, len(instances))
	}
	return w
}

// client returns an HTTP client through the balancer over w, with a
// transport of its own whose idle connections cleanup closes.
func client(t *testing.T, w *registry.Watcher) *http.Client {
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	return &http.Client{Transport: balancer.New(w).RoundTripper(base)}
}

func get(t *testing.T, c *http.Client) (string, error) {
	t.Helper()
	resp, err := c.Get("http://api/hello")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestRequestsGoRoundRobinToTheRunningInstances(t *testing.T) {
	a, b, c := newBackend(t, "a"), newBackend(t, "b"), newBackend(t, "c")
	w := fleet(t, map[string]string{"api-1": a.addr(), "api-2": b.addr(), "api-3": c.addr()})
	cl := client(t, w)
	var order []string
	for range 9 {
		got, err := get(t, cl)
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, got)
	}
	if got := strings.Join(order, ""); got != "abcabcabc" {
		t.Errorf("answered by %s, want abcabcabc (instance id order, in turn)", got)
	}
	if h := a.host[0]; h != "api" {
		t.Errorf("Host header %q, want the URL's host, api", h)
	}
}

func TestAnIdempotentRequestRefusedByOneInstanceIsSentOnceToAnother(t *testing.T) {
	live := newBackend(t, "live")
	w := fleet(t, map[string]string{"api-1": redistest.RefusedAddr(t), "api-2": live.addr()})
	cl := client(t, w)
	for i := range 6 {
		got, err := get(t, cl)
		if err != nil || got != "live" {
			t.Fatalf("GET %d: %q, %v; want it answered by the live instance", i, got, err)
		}
	}
	if n := live.count(); n != 6 {
		t.Errorf("live instance received %d requests, want 6 (each sent once to it)", n)
	}

	// A PUT with a body it can send again (http.NewRequest sets GetBody) is
	// retried with the whole body.
	for i := range 2 {
		req, _ := http.NewRequest(http.MethodPut, "http://api/item", strings.NewReader("payload"))
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatalf("PUT %d: %v", i, err)
		}
		resp.Body.Close()
	}
	live.mu.Lock()
	bodies := live.body[6:]
	live.mu.Unlock()
	if len(bodies) != 2 || bodies[0] != "payload" || bodies[1] != "payload" {
		t.Errorf("PUT bodies received %q, want the payload twice", bodies)
	}
}

func TestARequestThatCannotBeSentAgainIsNotRetried(t *testing.T) {
	refused := redistest.RefusedAddr(t)
	live := newBackend(t, "live")
	w := fleet(t, map[string]string{"api-1": refused, "api-2": live.addr()})
	cl := client(t, w)
	for _, tc := range []struct {
		name string
		req  func() *http.Request
	}{
		{"POST", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, "http://api/orders", strings.NewReader("order"))
			return r
		}},
		{"PUT with a body it cannot read again", func() *http.Request {
			r, _ := http.NewRequest(http.MethodPut, "http://api/item", io.NopCloser(strings.NewReader("x")))
			return r
		}},
	} {
		var refusedErr error
		for range 2 { // one of the two goes to the refused instance
			resp, err := cl.Do(tc.req())
			if err != nil {
				refusedErr = err
				continue
			}
			resp.Body.Close()
		}
		if refusedErr == nil || !errors.Is(refusedErr, syscall.ECONNREFUSED) ||
			!strings.Contains(refusedErr.Error(), "instance api-1 of api at "+refused) || strings.Contains(refusedErr.Error(), "retried") {
			t.Errorf("%s: error %v, want the refused dial, naming api-1 and its address, not retried", tc.name, refusedErr)
		}
	}
	// An Idempotency-Key makes a POST safe to send again.
	for range 2 {
		r, _ := http.NewRequest(http.MethodPost, "http://api/orders", strings.NewReader("order"))
		r.Header.Set("Idempotency-Key", "k-1")
		resp, err := cl.Do(r)
		if err != nil {
			t.Fatalf("POST with Idempotency-Key: %v", err)
		}
		resp.Body.Close()
	}
}

func TestTheRetryIsOnceOnly(t *testing.T) {
	a, b := redistest.RefusedAddr(t), redistest.RefusedAddr(t)
	w := fleet(t, map[string]string{"api-1": a, "api-2": b})
	_, err := get(t, client(t, w))
	if err == nil || !strings.Contains(err.Error(), "retried on instance") || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("error %v, want both refusals, the second as the retry", err)
	}
	if !strings.Contains(err.Error(), a) || !strings.Contains(err.Error(), b) {
		t.Errorf("error %v does not name both addresses", err)
	}

	// One instance, refused: nothing else to try.
	w = fleet(t, map[string]string{"api-1": a})
	_, err = get(t, client(t, w))
	if err == nil || strings.Contains(err.Error(), "retried") || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("error %v, want the refusal, no retry", err)
	}
}

func TestNoRunningInstanceIsAClearError(t *testing.T) {
	for _, tc := range []struct {
		name      string
		instances map[string]string
		want      string
	}{
		{"none running", map[string]string{}, `service "api" has no running instance`},
		{"none advertises an address", map[string]string{"api-1": ""}, "none of the 1 running instances of service \"api\" advertises an address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := fleet(t, tc.instances)
			_, err := get(t, client(t, w))
			if !errors.Is(err, balancer.ErrNoInstance) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrNoInstance saying %q", err, tc.want)
			}
			if _, err := balancer.New(w).Pick(); !errors.Is(err, balancer.ErrNoInstance) {
				t.Errorf("Pick: %v, want ErrNoInstance", err)
			}
		})
	}
}

func TestBeforeTheWatchersFirstReadTheErrorSaysSo(t *testing.T) {
	// A Redis that refuses: the watcher never reads the registry.
	c := redis.NewClient(&redis.Options{Addr: redistest.RefusedAddr(t), MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { c.Close() })
	w, err := registry.New(c).Watch("api")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	_, err = balancer.New(w).Pick()
	if !errors.Is(err, balancer.ErrNoInstance) || !strings.Contains(err.Error(), "has not read the registry yet") {
		t.Fatalf("Pick: %v, want ErrNoInstance saying the watcher has not read the registry", err)
	}
}

func TestACancelledRequestIsNotRetried(t *testing.T) {
	w := fleet(t, map[string]string{"api-1": redistest.RefusedAddr(t), "api-2": newBackend(t, "live").addr()})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://api/", nil)
	if _, err := client(t, w).Do(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
}
