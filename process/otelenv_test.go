package process

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stargazer/lifecycle/service"
)

// The OpenTelemetry SDK and autoexport read OTEL_* from the process
// environment, whatever Config.Getenv says; Main decides whether to export
// from the same place. A collector named only in the process environment
// receives the instance's spans although Getenv knows no OTEL_* variable
// (it once took Getenv's silence for "nothing configured" and exported
// nothing).
func TestOTELVariablesAreReadFromTheProcessEnvironmentAsTheSDKReadsThem(t *testing.T) {
	var posts atomic.Int32
	collector := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/v1/traces") {
			posts.Add(1)
		}
		w.WriteHeader(http.StatusOK)
	}))
	collector.Start()
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	t.Setenv("OTEL_LOGS_EXPORTER", "none")

	f := newFixture(t)
	svc := newTestService()
	ctx, cancel := context.WithCancel(context.Background())
	code := make(chan int, 1)
	go func() {
		code <- f.config(nil).Run(ctx, svc, service.WithServiceName("svc"), service.WithInstanceID("i-1"),
			service.WithRedis(f.client), service.WithBootJitter(0), service.WithHealthAddr("127.0.0.1:0"))
	}()
	<-svc.started
	cancel()
	if c := <-code; c != ExitOK {
		t.Fatalf("Run = %d, want %d:\n%s", c, ExitOK, f.logs.String())
	}
	// Run flushes the exporter before it returns.
	if posts.Load() == 0 {
		t.Fatal("the collector in OTEL_EXPORTER_OTLP_ENDPOINT received no spans")
	}
}
