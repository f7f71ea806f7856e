package process

import (
	"context"
	"os"
	"time"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/stargazer/lifecycle/service"
)

// setupOTel installs, as the global providers, a TracerProvider and (when
// an OTEL_* variable asks for metrics) a MeterProvider configured from the
// OTEL_* variables through autoexport, with in's service.name,
// service.instance.id and service.version on the resource. The instance
// reads the global providers unless it was given its own (WithTracerProvider,
// WithMeterProvider); it has not made a span yet. Without any exporter
// variable set, nothing is exported (rather than retrying a collector that is
// not there). It also installs the W3C trace-context propagator.
func setupOTel(ctx context.Context, in *service.Instance) (func(), error) {
	// OTEL_* come from the process environment, where the SDK and autoexport
	// read them, never from Config.Getenv: deciding on one and exporting by
	// the other would export nothing, or to a default endpoint, unasked.
	getenv := os.Getenv
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	var closers []func(context.Context) error
	shutdown := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i](ctx)
		}
	}
	res, err := resource.New(ctx,
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
		resource.WithAttributes(
			semconv.ServiceName(in.Name()),
			semconv.ServiceInstanceID(in.ID()),
			semconv.ServiceVersion(in.Version()),
		),
	)
	if err != nil && res == nil {
		return shutdown, &service.ConfigError{Name: "OTEL_RESOURCE_ATTRIBUTES", Value: getenv("OTEL_RESOURCE_ATTRIBUTES"), Err: err}
	}
	none := func(context.Context) (sdktrace.SpanExporter, error) { return nil, nil }
	{
		var spanOpts []autoexport.SpanOption
		if !otelTracesConfigured(getenv) {
			spanOpts = append(spanOpts, autoexport.WithFallbackSpanExporter(none))
		}
		exp, err := autoexport.NewSpanExporter(ctx, spanOpts...)
		if err != nil {
			return shutdown, &service.ConfigError{Name: "OTEL_TRACES_EXPORTER", Value: getenv("OTEL_TRACES_EXPORTER"), Err: err}
		}
		topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
		if exp != nil && !autoexport.IsNoneSpanExporter(exp) {
			topts = append(topts, sdktrace.WithBatcher(exp))
		}
		tp := sdktrace.NewTracerProvider(topts...)
		closers = append(closers, tp.Shutdown)
		otel.SetTracerProvider(tp)
	}
	if otelMetricsConfigured(getenv) {
		reader, err := autoexport.NewMetricReader(ctx)
		if err != nil {
			return shutdown, &service.ConfigError{Name: "OTEL_METRICS_EXPORTER", Value: getenv("OTEL_METRICS_EXPORTER"), Err: err}
		}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(reader))
		closers = append(closers, mp.Shutdown)
		otel.SetMeterProvider(mp)
	}
	return shutdown, nil
}

func otelTracesConfigured(getenv func(string) string) bool {
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		if getenv(k) != "" {
			return true
		}
	}
	return false
}

func otelMetricsConfigured(getenv func(string) string) bool {
	for _, k := range []string{"OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"} {
		if getenv(k) != "" {
			return true
		}
	}
	return false
}
