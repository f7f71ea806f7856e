package health

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkReadyz measures a /readyz probe through the server's handler, with
// one cached check, against BenchmarkBareHandler: the cost of the state
// snapshot, the verdict and the cache read over plain net/http + JSON.
func BenchmarkReadyz(b *testing.B) {
	s, err := New(newSource("running", time.Now()), WithCheck("redis:ping", func(context.Context) error { return nil }, Required()))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	s.Refresh(context.Background())
	h := s.Handler()
	req := httptest.NewRequest(http.MethodGet, "/readyz", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("readyz = %d", rec.Code)
		}
	}
}

// BenchmarkBareHandler is the baseline: a bare handler writing a body of the
// same shape.
func BenchmarkBareHandler(b *testing.B) {
	now := time.Now()
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		body, _ := json.Marshal(Response{
			Status: StatusPass, Version: "1.4.2", ServiceID: "billing-1", Description: "billing", State: "running",
			Checks: map[string][]CheckResult{
				LifecycleCheck: {{Status: StatusPass, ComponentType: "system", ObservedValue: 12.5, ObservedUnit: "s", Time: now}},
				"redis:ping":   {{Status: StatusPass, ComponentType: "component", ObservedValue: 0.2, ObservedUnit: "ms", Time: now}},
			},
		})
		w.Header().Set("Content-Type", ContentType)
		_, _ = w.Write(body)
	})
	req := httptest.NewRequest(http.MethodGet, "/readyz", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
	}
}
