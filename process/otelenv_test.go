package process

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel"

	"github.com/stargazer/lifecycle/service"
)

// The OpenTelemetry SDK and autoexport read OTEL_* from the process
// environment, whatever Config.Getenv says, and Main decides whether to
// export from the same place: a collector named only in the process
// environment receives spans. (Main once took Getenv's silence for "nothing
// configured" and exported nothing.)
func TestOTELVariablesAreReadFromTheProcessEnvironmentAsTheSDKReadsThem(t *testing.T) {
	var posts atomic.Int32
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/v1/traces") {
			posts.Add(1)
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	t.Setenv("OTEL_LOGS_EXPORTER", "none")

	in, err := service.New(newTestService(), service.WithServiceName("svc"), service.WithoutHealthServer())
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	shutdown, err := setupOTel(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	_, span := otel.GetTracerProvider().Tracer("test").Start(context.Background(), "probe")
	span.End()
	shutdown() // flushes
	if posts.Load() == 0 {
		t.Fatal("the collector in OTEL_EXPORTER_OTLP_ENDPOINT received no spans")
	}
}
