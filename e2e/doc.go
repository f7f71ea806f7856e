// Package e2e checks, end to end, that a service built on
// github.com/stargazer/lifecycle reads as the design says in a real Jaeger.
//
// The test builds Jaeger v1.76.0 (pinned in the jaeger/ module beside this one, so
// its dependencies are exactly those of its release and never enter the library's
// go.mod) and cmd/demo (in the library's own module, so it is the demo as shipped).
// It starts Jaeger all-in-one with in-memory storage (testdata/jaeger.yaml) and a
// real redis-server, every listener on 127.0.0.1 and a free port; runs the demo with
// OTEL_EXPORTER_OTLP_ENDPOINT pointed at Jaeger; stops it with SIGTERM; and reads the
// traces back through Jaeger's query API (/api/traces?service=). The expected
// transitions come from phases.Lifecycle, the table that drives the machine.
//
// Run it from this directory:
//
//	go test -count=1 -timeout 20m ./...
//
// Without redis-server on PATH the test is skipped, unless CI=true: then it fails.
// E2E_JAEGER_BIN names a prebuilt jaeger binary to use instead of building one;
// E2E_TRACE_DIR names a directory where the traces read back are written as JSON
// (docs/tracing.md quotes them).
package e2e
