package lifecycle

import (
	"context"
	"sync/atomic"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// A user's machine and the lifecycle report through one MeterProvider and one
// TracerProvider: every data point and span says which machine it is from.
func TestTwoMachinesSeriesAndSpansNeverMix(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	var unlocked atomic.Bool
	unlocked.Store(true)
	d := newDoor(t, &unlocked, WithMachineMeterProvider(mp), WithMachineTracerProvider(tp))
	m, err := NewMachine(&toggle, WithMachineMeterProvider(mp), WithMachineTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := d.Fire(context.Background(), "open"); err != nil {
		t.Fatal(err)
	}
	if err := m.Fire(context.Background(), "go"); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	counter := findMetric(t, rm, "lifecycle.transitions").Data.(metricdata.Sum[int64])
	got := map[string]int64{}
	for _, dp := range counter.DataPoints {
		got[attr(dp.Attributes, AttrMachine)+" "+attr(dp.Attributes, AttrEvent)] += dp.Value
	}
	if len(got) != 2 || got["door open"] != 1 || got["toggle go"] != 1 {
		t.Errorf("transitions by machine and event: %v, want door open 1, toggle go 1", got)
	}
	gauge := findMetric(t, rm, "lifecycle.state").Data.(metricdata.Gauge[int64])
	current := map[string]string{}
	for _, dp := range gauge.DataPoints {
		if dp.Value == 1 {
			current[attr(dp.Attributes, AttrMachine)] = attr(dp.Attributes, AttrState)
		}
	}
	if current["door"] != "open" || current["toggle"] != "b" || len(current) != 2 {
		t.Errorf("state at 1 by machine: %v, want door open, toggle b", current)
	}
	for _, s := range spans.Ended() {
		machine, _ := attrOf(s.Attributes(), AttrMachine)
		if want := map[string]string{"transition open [unlocked]": "door", "transition go": "toggle"}[s.Name()]; machine.AsString() != want {
			t.Errorf("span %q: machine %q, want %q", s.Name(), machine.AsString(), want)
		}
	}
}

func findMetric(t *testing.T, rm metricdata.ResourceMetrics, name string) metricdata.Metrics {
	t.Helper()
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != ScopeName {
			continue
		}
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m
			}
		}
	}
	t.Fatalf("metric %q not found in scope %q", name, ScopeName)
	return metricdata.Metrics{}
}

func attr(set attribute.Set, k attribute.Key) string {
	v, _ := set.Value(k)
	return v.AsString()
}
