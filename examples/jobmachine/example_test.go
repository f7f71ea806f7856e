package jobmachine_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/stargazer/lifecycle"
	"github.com/stargazer/lifecycle/diagrams"
	"github.com/stargazer/lifecycle/examples/jobmachine"
)

// A job that fails once and then succeeds: the status observer sees every
// transition, and the trace has the job's root, a span per transition (the guard
// that sent the failed attempt to retrying is on its span) and a span per attempt.
func Example() {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())

	// A status observer: where a service would write the registry, print.
	status := lifecycle.ObserverFunc(func(_ context.Context, t lifecycle.Transition) {
		line := fmt.Sprintf("status: %s -> %s on %s", t.From, t.To, t.Event)
		if g := t.Guard.String(); g != "" {
			line += " [" + g + "]"
		}
		if t.Cause != nil {
			line += ": " + t.Cause.Error()
		}
		fmt.Println(line)
	})

	job, err := jobmachine.New("resize-42", jobmachine.Config{
		MaxAttempts:    3,
		TracerProvider: tp,                           // spans: job root, transitions, attempts
		Observers:      []lifecycle.Observer{status}, // every transition, in order
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer job.Close()

	err = job.Run(context.Background(), func(ctx context.Context, attempt int) error {
		if attempt == 1 { // the first attempt fails; the guard allows a retry
			return errors.New("storage timeout")
		}
		return nil
	})
	fmt.Println("result:", job.State(), err)

	fmt.Println("spans, as they ended:")
	printSpans(rec.Ended())
	// Output:
	// status: queued -> running on start
	// status: running -> retrying on fail [retries_left]: storage timeout
	// status: retrying -> running on retry
	// status: running -> succeeded on succeed
	// result: succeeded <nil>
	// spans, as they ended:
	// transition start (child of job resize-42) lifecycle.event=start lifecycle.from=queued lifecycle.machine=job lifecycle.phase=2 lifecycle.phase_label=2 lifecycle.to=running
	// attempt 1 (child of job resize-42) error="storage timeout" lifecycle.state=running
	// transition fail [retries_left] (child of job resize-42) error="storage timeout" lifecycle.event=fail lifecycle.from=running lifecycle.guard=retries_left lifecycle.machine=job lifecycle.to=retrying
	// transition retry (child of job resize-42) lifecycle.event=retry lifecycle.from=retrying lifecycle.machine=job lifecycle.phase=2 lifecycle.phase_label=2 lifecycle.to=running
	// attempt 2 (child of job resize-42) lifecycle.state=running
	// transition succeed (child of job resize-42) lifecycle.event=succeed lifecycle.from=running lifecycle.machine=job lifecycle.to=succeeded
	// job resize-42 (root)
}

// When the attempts run out, the same event takes the other guarded edge: fail
// [not retries_left] ends the job in failed.
func Example_outOfAttempts() {
	status := lifecycle.ObserverFunc(func(_ context.Context, t lifecycle.Transition) {
		fmt.Printf("status: %s -> %s on %s [%s]\n", t.From, t.To, t.Event, t.Guard)
	})
	job, err := jobmachine.New("resize-43", jobmachine.Config{MaxAttempts: 2, Observers: []lifecycle.Observer{status}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer job.Close()
	err = job.Run(context.Background(), func(context.Context, int) error { return errors.New("disk full") })
	fmt.Println("result:", job.State(), err)
	// Output:
	// status: queued -> running on start []
	// status: running -> retrying on fail [retries_left]
	// status: retrying -> running on retry []
	// status: running -> failed on fail [not retries_left]
	// result: failed disk full
}

// The machine's metrics come with it: give it a MeterProvider and read
// lifecycle.transitions by from, to and event.
func Example_metrics() {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())

	job, err := jobmachine.New("resize-44", jobmachine.Config{MaxAttempts: 3, MeterProvider: mp})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer job.Close()
	_ = job.Run(context.Background(), func(_ context.Context, attempt int) error {
		if attempt < 3 {
			return errors.New("busy")
		}
		return nil
	})

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		fmt.Println(err)
		return
	}
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch data := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range data.DataPoints {
					lines = append(lines, fmt.Sprintf("%s{%s} %d", m.Name, attrs(dp.Attributes.ToSlice()), dp.Value))
				}
			case metricdata.Gauge[int64]:
				for _, dp := range data.DataPoints {
					if dp.Value == 1 {
						lines = append(lines, fmt.Sprintf("%s{%s} 1", m.Name, attrs(dp.Attributes.ToSlice())))
					}
				}
			}
		}
	}
	sort.Strings(lines)
	fmt.Println(strings.Join(lines, "\n"))
	// Output:
	// lifecycle.state{lifecycle.machine=job lifecycle.state=succeeded} 1
	// lifecycle.transitions{lifecycle.event=fail lifecycle.from=running lifecycle.machine=job lifecycle.to=retrying} 2
	// lifecycle.transitions{lifecycle.event=retry lifecycle.from=retrying lifecycle.machine=job lifecycle.to=running} 2
	// lifecycle.transitions{lifecycle.event=start lifecycle.from=queued lifecycle.machine=job lifecycle.to=running} 1
	// lifecycle.transitions{lifecycle.event=succeed lifecycle.from=running lifecycle.machine=job lifecycle.to=succeeded} 1
}

// The job's own diagram, drawn from its table as the lifecycle's is from
// phases.Lifecycle; diagrams.DOT and diagrams.Markdown work the same way.
func Example_diagram() {
	fmt.Print(string(diagrams.Mermaid(&jobmachine.Table)))
	// Output:
	// ---
	// title: "job"
	// ---
	// stateDiagram-v2
	//     state "work" as g_work {
	//         state "1 queued" as s_queued
	//         state "2 running" as s_running
	//         state "retrying" as s_retrying
	//     }
	//     state "done" as g_done {
	//         state "succeeded" as s_succeeded
	//         state "failed" as s_failed
	//     }
	//     [*] --> s_queued
	//     s_queued --> s_running : start
	//     s_running --> s_succeeded : succeed
	//     s_running --> s_retrying : fail [retries_left]
	//     g_work --> s_failed : cancel
	//     s_running --> s_failed : fail [not retries_left]
	//     s_retrying --> s_running : retry
	//     s_succeeded --> [*]
	//     s_failed --> [*]
}

// printSpans prints each span with its parent, its lifecycle.* attributes and
// its error, in the order the spans ended.
func printSpans(spans []sdktrace.ReadOnlySpan) {
	names := map[trace.SpanID]string{}
	for _, s := range spans {
		names[s.SpanContext().SpanID()] = s.Name()
	}
	for _, s := range spans {
		parent := "root"
		if s.Parent().IsValid() {
			parent = "child of " + names[s.Parent().SpanID()]
		}
		var kvs []attribute.KeyValue
		for _, kv := range s.Attributes() {
			if strings.HasPrefix(string(kv.Key), "lifecycle.") {
				kvs = append(kvs, kv)
			}
		}
		line := fmt.Sprintf("%s (%s)", s.Name(), parent)
		if s.Status().Description != "" {
			line += fmt.Sprintf(" error=%q", s.Status().Description)
		}
		if a := attrs(kvs); a != "" {
			line += " " + a
		}
		fmt.Println(line)
	}
}

// attrs renders attributes as sorted key=value pairs.
func attrs(kvs []attribute.KeyValue) string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = fmt.Sprintf("%s=%s", kv.Key, kv.Value.String())
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}
