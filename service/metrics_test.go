package service

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/stargazer/lifecycle"
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
		s, _ := dp.Attributes.Value(lifecycle.AttrState)
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
		if s, _ := dp.Attributes.Value(lifecycle.AttrState); dp.Value == 1 && s.AsString() != string(phases.Stopped) {
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
		seen[[3]string{attr(dp.Attributes, lifecycle.AttrFrom), attr(dp.Attributes, lifecycle.AttrTo), attr(dp.Attributes, lifecycle.AttrEvent)}] = dp.Value
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
		perState[attr(dp.Attributes, lifecycle.AttrState)] = dp.Count
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
		if sm.Scope.Name != lifecycle.ScopeName {
			continue
		}
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m
			}
		}
	}
	t.Fatalf("metric %q not found in scope %q", name, lifecycle.ScopeName)
	return metricdata.Metrics{}
}

func attr(set attribute.Set, k attribute.Key) string {
	v, _ := set.Value(k)
	return v.AsString()
}
