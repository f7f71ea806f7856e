package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// benchFleet starts a redis-server holding one service of n instances in
// every state of the table.
func benchFleet(b *testing.B, n int) (*redis.Client, func()) {
	b.Helper()
	srv, err := redistest.Start()
	if err != nil {
		b.Skip(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	states := lifecycleTable().States
	for i := range n {
		e := entry("big", fmt.Sprintf("big-%04d", i), string(states[i%len(states)].Name))
		e.Host = fmt.Sprintf("node-%03d.example.internal", i%200)
		e.HealthAddr, e.Owner = "10.0.0.1:9090", "0123456789abcdef0123456789abcdef"
		put(b, rdb, e)
	}
	return rdb, func() { rdb.Close(); srv.Kill() }
}

// BenchmarkServicePage1000Instances renders GET /service?name=big for a
// service of 1,000 instances: the registry reads (index, MGET, scores),
// the recent transitions, and the template.
func BenchmarkServicePage1000Instances(b *testing.B) {
	rdb, stop := benchFleet(b, 1000)
	defer stop()
	s, err := New(Config{Redis: rdb, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, "/service?name=big", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("GET /service = %d: %s", rec.Code, rec.Body)
		}
		b.SetBytes(int64(rec.Body.Len()))
	}
}

// BenchmarkBaselineServiceJSON1000Instances is what sgctl ps --json costs
// for the same service: the registry read and encoding/json, no page.
func BenchmarkBaselineServiceJSON1000Instances(b *testing.B) {
	rdb, stop := benchFleet(b, 1000)
	defer stop()
	reg := registry.New(rdb)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		es, err := reg.Instances(ctx, "big")
		if err != nil || len(es) != 1000 {
			b.Fatalf("%d entries, %v", len(es), err)
		}
		out, err := json.Marshal(es)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(out)))
	}
}
