package e2e

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/stargazer/lifecycle/phases"
)

// exportedMetrics returns, oldest first, the metric exports of service that
// Jaeger's debug exporter (verbosity normal) wrote to its log: per export, the
// lifecycle data points, one line each, as `name{attr=value,...} value`.
func exportedMetrics(jaegerLog, service string) [][]string {
	var exports [][]string
	mine := false
	for _, line := range strings.Split(jaegerLog, "\n") {
		if i := strings.Index(line, "ResourceMetrics #"); i >= 0 {
			mine = strings.Contains(line[i:]+" ", " service.name="+service+" ")
			if mine {
				exports = append(exports, nil)
			}
			continue
		}
		if mine && strings.HasPrefix(line, "lifecycle.") {
			exports[len(exports)-1] = append(exports[len(exports)-1], line)
		}
	}
	return exports
}

// point returns the value of the data point `name{attrs}` in points.
func point(points []string, name, attrs string) (string, bool) {
	prefix := name + "{" + attrs + "} "
	for _, p := range points {
		if v, ok := strings.CutPrefix(p, prefix); ok {
			return v, true
		}
	}
	return "", false
}

// checkRunningMetrics checks one export taken while the instance was running:
// the state gauge is 1 for running and 0 for every other state, the transition
// into running was counted once, and the slow phase's time is in its histogram.
func checkRunningMetrics(points []string) error {
	for _, s := range phases.Lifecycle().States {
		want := "0"
		if s.Name == phases.Running {
			want = "1"
		}
		got, ok := point(points, "lifecycle.state", "lifecycle.machine=lifecycle,lifecycle.state="+string(s.Name))
		if !ok || got != want {
			return fmt.Errorf("lifecycle.state{lifecycle.state=%s} = %q (exported: %v), want %s", s.Name, got, ok, want)
		}
	}
	into := "lifecycle.event=health_serving,lifecycle.from=serving_health,lifecycle.machine=lifecycle,lifecycle.to=running"
	if got, _ := point(points, "lifecycle.transitions", into); got != "1" {
		return fmt.Errorf("lifecycle.transitions{%s} = %q, want 1", into, got)
	}
	got, ok := point(points, "lifecycle.phase.duration", "lifecycle.machine=lifecycle,lifecycle.state="+string(slowPhase))
	if !ok {
		return fmt.Errorf("no lifecycle.phase.duration{lifecycle.state=%s} point", slowPhase)
	}
	// "count=1 sum=0.200412 min=... max=... le0=0 ..."
	fields := strings.Fields(got)
	if len(fields) < 2 || fields[0] != "count=1" || !strings.HasPrefix(fields[1], "sum=") {
		return fmt.Errorf("lifecycle.phase.duration{lifecycle.state=%s} = %q, want count=1 sum=...", slowPhase, got)
	}
	sum, err := strconv.ParseFloat(strings.TrimPrefix(fields[1], "sum="), 64)
	if err != nil || sum < slowDelay.Seconds() {
		return fmt.Errorf("lifecycle.phase.duration{lifecycle.state=%s} sum %q, want >= %gs", slowPhase, fields[1], slowDelay.Seconds())
	}
	return nil
}

// checkStoppedMetrics checks the last export of a clean run: every shutdown
// transition was counted once.
func checkStoppedMetrics(points []string) error {
	for _, e := range shutdownPath(phases.Running, phases.Stop, false) {
		attrs := fmt.Sprintf("lifecycle.event=%s,lifecycle.from=%s,lifecycle.machine=lifecycle,lifecycle.to=%s", e.Event, e.From[0], e.To)
		if got, _ := point(points, "lifecycle.transitions", attrs); got != "1" {
			return fmt.Errorf("lifecycle.transitions{%s} = %q, want 1", attrs, got)
		}
	}
	return nil
}
