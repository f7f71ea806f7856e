package lifecycle

import (
	"context"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/stargazer/lifecycle/phases"
)

func TestMetricsAfterBootAndShutdown(t *testing.T) {
	f := newFixture(t)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())
	in, err := New(newTestService(), f.options(WithMeterProvider(mp))...)
	if err != nil {
		t.Fatal(err)
	}
	// Read the gauge while running: the machine stops reporting it once stopped.
	if err := in.Boot(context.Background()); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	gauge := findMetric(t, rm, "lifecycle.state").Data.(metricdata.Gauge[int64])
	ones := 0
	for _, dp := range gauge.DataPoints {
		s, _ := dp.Attributes.Value(AttrState)
		if dp.Value == 1 {
			ones++
			if s.AsString() != string(phases.Running) {
				t.Errorf("gauge says %q, want running", s.AsString())
			}
		}
	}
	if ones != 1 || len(gauge.DataPoints) != len(phases.Lifecycle().States) {
		t.Errorf("gauge has %d points with %d at 1; want one point per state, one at 1", len(gauge.DataPoints), ones)
	}

	if err := in.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	rm = metricdata.ResourceMetrics{}
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}

	// The gauge reports the final state until the instance is closed.
	gauge = findMetric(t, rm, "lifecycle.state").Data.(metricdata.Gauge[int64])
	for _, dp := range gauge.DataPoints {
		if s, _ := dp.Attributes.Value(AttrState); dp.Value == 1 && s.AsString() != string(phases.Stopped) {
			t.Errorf("after shutdown the gauge says %q, want stopped", s.AsString())
		}
	}
	defer in.Close()

	counter := findMetric(t, rm, "lifecycle.transitions").Data.(metricdata.Sum[int64])
	if !counter.IsMonotonic {
		t.Error("lifecycle.transitions is not monotonic")
	}
	seen := map[[3]string]int64{}
	var total int64
	for _, dp := range counter.DataPoints {
		seen[[3]string{attr(dp.Attributes, AttrFrom), attr(dp.Attributes, AttrTo), attr(dp.Attributes, AttrEvent)}] = dp.Value
		total += dp.Value
	}
	if total != int64(len(cleanPath)-1) {
		t.Errorf("%d transitions counted, want %d", total, len(cleanPath)-1)
	}
	for _, want := range [][3]string{
		{"init", "connecting", "connect"},
		{"connecting", "configuring", "ping_ok"},
		{"running", "stopping_daemons", "stop"},
		{"cleaning_up", "stopped", "cleaned_up"},
	} {
		if seen[want] != 1 {
			t.Errorf("transitions{from=%s,to=%s,event=%s} = %d, want 1", want[0], want[1], want[2], seen[want])
		}
	}

	hist := findMetric(t, rm, "lifecycle.phase.duration").Data.(metricdata.Histogram[float64])
	perState := map[string]uint64{}
	for _, dp := range hist.DataPoints {
		perState[attr(dp.Attributes, AttrState)] = dp.Count
	}
	for _, s := range cleanPath[:len(cleanPath)-1] {
		if perState[string(s)] != 1 {
			t.Errorf("phase.duration{state=%s} count %d, want 1", s, perState[string(s)])
		}
	}
	if findMetric(t, rm, "lifecycle.phase.duration").Unit != "s" {
		t.Error("phase duration unit is not seconds")
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
		t.Errorf("lifecycle.transitions by machine and event: %v, want door open 1, toggle go 1", got)
	}
	gauge := findMetric(t, rm, "lifecycle.state").Data.(metricdata.Gauge[int64])
	current := map[string]string{}
	for _, dp := range gauge.DataPoints {
		if dp.Value == 1 {
			current[attr(dp.Attributes, AttrMachine)] = attr(dp.Attributes, AttrState)
		}
	}
	if current["door"] != "open" || current["toggle"] != "b" || len(current) != 2 {
		t.Errorf("lifecycle.state at 1 by machine: %v, want door open, toggle b", current)
	}
	for _, s := range spans.Ended() {
		machine, _ := attrOf(s.Attributes(), AttrMachine)
		if want := map[string]string{"transition open [unlocked]": "door", "transition go": "toggle"}[s.Name()]; machine.AsString() != want {
			t.Errorf("span %q: lifecycle.machine %q, want %q", s.Name(), machine.AsString(), want)
		}
	}
}
