package main

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/stargazer/lifecycle/phases"
)

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// scrape reads and parses the Prometheus text exposition at url.
func scrape(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// find returns the metric of family f whose labels include want.
func find(f *dto.MetricFamily, want map[string]string) *dto.Metric {
	if f == nil {
		return nil
	}
next:
	for _, m := range f.GetMetric() {
		got := labels(m)
		for k, v := range want {
			if got[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

func TestDemoServesTheLifecycleMetricsToPrometheus(t *testing.T) {
	port := freePort(t)
	p := startDemo(t, "OTEL_METRICS_EXPORTER=prometheus", "OTEL_EXPORTER_PROMETHEUS_HOST=127.0.0.1",
		"OTEL_EXPORTER_PROMETHEUS_PORT="+strconv.Itoa(port), "DEMO_PHASE_DELAY=loading_modules=300ms")
	p.WaitFor(t, "boot completed")
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	var fams map[string]*dto.MetricFamily
	deadline := time.Now().Add(20 * time.Second)
	for {
		var err error
		fams, err = scrape(url)
		if err == nil && find(fams["lifecycle_state"], map[string]string{"lifecycle_state": "running"}).GetGauge().GetValue() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lifecycle_state{lifecycle_state=\"running\"} 1 at %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, bounded by the deadline
	}

	// The state gauge: 1 for running, 0 for every other state of the table.
	states := fams["lifecycle_state"]
	if states.GetType() != dto.MetricType_GAUGE {
		t.Errorf("lifecycle_state is a %s, want a gauge", states.GetType())
	}
	for _, s := range phases.Lifecycle().States {
		want := 0.0
		if s.Name == phases.Running {
			want = 1
		}
		m := find(states, map[string]string{"lifecycle_machine": "lifecycle", "lifecycle_state": string(s.Name)})
		if m == nil || m.GetGauge().GetValue() != want {
			t.Errorf("lifecycle_state{lifecycle_state=%q} = %v, want %v", s.Name, m.GetGauge(), want)
		}
	}

	// The transition counter: the move into running, once.
	tr := fams["lifecycle_transitions_total"]
	into := find(tr, map[string]string{"lifecycle_machine": "lifecycle", "lifecycle_from": "serving_health", "lifecycle_to": "running", "lifecycle_event": "health_serving"})
	if tr.GetType() != dto.MetricType_COUNTER || into.GetCounter().GetValue() != 1 {
		t.Errorf("lifecycle_transitions_total into running: %v (%s), want a counter at 1", into.GetCounter(), tr.GetType())
	}

	// The phase duration histogram, in seconds: the slow phase is in the
	// 0.25-0.5s bucket, not the first one.
	h := find(fams["lifecycle_phase_duration_seconds"], map[string]string{"lifecycle_machine": "lifecycle", "lifecycle_state": "loading_modules"}).GetHistogram()
	if h.GetSampleCount() != 1 || h.GetSampleSum() < 0.3 {
		t.Fatalf("lifecycle_phase_duration_seconds{lifecycle_state=loading_modules}: count %d sum %v, want one sample >= 0.3s", h.GetSampleCount(), h.GetSampleSum())
	}
	for _, b := range h.GetBucket() {
		if le := b.GetUpperBound(); le < 0.3 && b.GetCumulativeCount() != 0 || le >= 0.5 && b.GetCumulativeCount() != 1 {
			t.Errorf("bucket le=%v holds %d: the 0.3s phase is in the wrong bucket", le, b.GetCumulativeCount())
		}
	}
	boot := find(fams["lifecycle_boot_duration_seconds"], map[string]string{"lifecycle_machine": "lifecycle", "lifecycle_outcome": "running"}).GetHistogram()
	if boot.GetSampleCount() != 1 || boot.GetSampleSum() < 0.3 {
		t.Errorf("lifecycle_boot_duration_seconds{lifecycle_outcome=running}: count %d sum %v, want one boot >= 0.3s", boot.GetSampleCount(), boot.GetSampleSum())
	}
	// The resource: service.name and service.instance.id, for joins.
	if ti := find(fams["target_info"], map[string]string{"service_name": "demo"}); ti == nil || labels(ti)["service_instance_id"] == "" {
		t.Errorf("target_info lacks service_name=demo and service_instance_id: %v", fams["target_info"])
	}

	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if c := p.Wait(t); c != 0 {
		t.Fatalf("exit code %d, want 0", c)
	}
}
