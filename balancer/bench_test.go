package balancer_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stargazer/lifecycle/balancer"
)

// BenchmarkPick is the balancer's own cost on a request path: an atomic
// load of the watcher's view, a scan of 3 instances, an atomic add.
func BenchmarkPick(b *testing.B) {
	w := fleetB(b, map[string]string{"api-1": "127.0.0.1:1", "api-2": "127.0.0.1:2", "api-3": "127.0.0.1:3"})
	bl := balancer.New(w)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := bl.Pick(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGet compares a GET through the balancer with the same GET on a
// bare net/http client, both to one loopback server (keep-alive).
func BenchmarkGet(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	run := func(b *testing.B, c *http.Client, url string) {
		b.ReportAllocs()
		for b.Loop() {
			resp, err := c.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	b.Run("baseline=net/http", func(b *testing.B) {
		base := &http.Transport{}
		defer base.CloseIdleConnections()
		run(b, &http.Client{Transport: base}, srv.URL+"/")
	})
	b.Run("balancer", func(b *testing.B) {
		w := fleetB(b, map[string]string{"api-1": addr})
		base := &http.Transport{}
		defer base.CloseIdleConnections()
		run(b, &http.Client{Transport: balancer.New(w).RoundTripper(base)}, "http://api/")
	})
}
