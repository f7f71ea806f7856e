package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/internal/proctest"
)

// jaegerServer is Jaeger all-in-one (v2) with in-memory storage, configured by
// testdata/jaeger.yaml: OTLP receivers and the query API, all on loopback.
type jaegerServer struct {
	*proctest.Proc
	otlpHTTP  string // host:port of the OTLP/HTTP receiver
	otlpGRPC  string // host:port of the OTLP/gRPC receiver
	queryHTTP string // host:port of the query API and UI
}

// jaegerStartTimeout bounds Jaeger's start on a loaded 2-core machine.
const jaegerStartTimeout = 60 * time.Second

// startJaeger starts bin with testdata/jaeger.yaml on four free loopback ports and
// waits until the query API answers and the OTLP/HTTP receiver accepts
// connections. It retries with new ports when one was taken meanwhile. A failing
// test prints the tail of Jaeger's log.
func startJaeger(t *testing.T, bin string) *jaegerServer {
	t.Helper()
	config, err := filepath.Abs(filepath.Join("testdata", "jaeger.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for attempt := 1; attempt <= 3; attempt++ {
		addr := func() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))) }
		j := &jaegerServer{otlpHTTP: addr(), otlpGRPC: addr(), queryHTTP: addr()}
		env := []string{
			"E2E_OTLP_HTTP=" + j.otlpHTTP,
			"E2E_OTLP_GRPC=" + j.otlpGRPC,
			"E2E_JAEGER_QUERY_HTTP=" + j.queryHTTP,
			"E2E_JAEGER_QUERY_GRPC=" + addr(),
		}
		j.Proc = proctest.Start(t, proctest.Cmd{Bin: bin, Name: fmt.Sprintf("jaeger-%d", attempt), Args: []string{"--config=file:" + config}, Env: env})
		err := poll(jaegerStartTimeout, j.Exited, func() error {
			if err := dialable(j.otlpHTTP); err != nil {
				return fmt.Errorf("OTLP/HTTP receiver: %w", err)
			}
			code, body, err := httpGet("http://" + j.queryHTTP + "/api/services")
			if err != nil {
				return fmt.Errorf("query API: %w", err)
			}
			if code != 200 {
				return fmt.Errorf("query API: GET /api/services: %d %s", code, body)
			}
			return nil
		})
		if err == nil {
			return j // its cleanup logs the tail of its output when the test failed
		}
		last = fmt.Sprintf("%v\n%s", err, j.Tail(60))
		j.Kill()
		if !strings.Contains(last, "address already in use") {
			break
		}
	}
	t.Fatalf("jaeger did not start\n%s", last)
	return nil
}

// The JSON of Jaeger's query API (/api/traces), as much of it as the test reads.
type (
	apiTraces struct {
		Data   []apiTrace `json:"data"`
		Errors []any      `json:"errors"`
	}
	apiTrace struct {
		TraceID   string                `json:"traceID"`
		Spans     []apiSpan             `json:"spans"`
		Processes map[string]apiProcess `json:"processes"`
		raw       json.RawMessage
	}
	apiSpan struct {
		TraceID       string   `json:"traceID"`
		SpanID        string   `json:"spanID"`
		OperationName string   `json:"operationName"`
		References    []apiRef `json:"references"`
		StartTime     int64    `json:"startTime"` // µs since the epoch
		Duration      int64    `json:"duration"`  // µs
		Tags          []apiKV  `json:"tags"`
		ProcessID     string   `json:"processID"`
	}
	apiRef struct {
		RefType string `json:"refType"` // CHILD_OF, FOLLOWS_FROM (OTel links)
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	}
	apiProcess struct {
		ServiceName string  `json:"serviceName"`
		Tags        []apiKV `json:"tags"`
	}
	apiKV struct {
		Key   string `json:"key"`
		Type  string `json:"type"`
		Value any    `json:"value"`
	}
)

// traces returns the traces Jaeger holds for service.
func (j *jaegerServer) traces(service string) ([]apiTrace, error) {
	u := "http://" + j.queryHTTP + "/api/traces?limit=50&lookback=1h&service=" + url.QueryEscape(service)
	code, body, err := httpGet(u)
	if err != nil {
		return nil, err
	}
	if code == 404 {
		return nil, fmt.Errorf("no traces yet for service %q", service)
	}
	if code != 200 {
		return nil, fmt.Errorf("GET %s: %d %s", u, code, body)
	}
	// Decode twice: once into the model, once per trace as raw JSON for dumps.
	var res apiTraces
	if err := json.Unmarshal(body, &res); err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	var raw struct {
		Data []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	for i := range res.Data {
		res.Data[i].raw = raw.Data[i]
	}
	return res.Data, nil
}

// tag returns the value of the tag key and whether it is there.
func tag(kvs []apiKV, key string) (any, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return nil, false
}

// tagString returns the tag key rendered as a string ("" when absent). Jaeger gives
// ints as JSON numbers (float64 here) and bools as JSON booleans.
func tagString(kvs []apiKV, key string) string {
	v, ok := tag(kvs, key)
	if !ok {
		return ""
	}
	if f, ok := v.(float64); ok {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// root returns the span of tr without a CHILD_OF reference.
func (tr *apiTrace) root() (apiSpan, bool) {
	for _, s := range tr.Spans {
		child := false
		for _, r := range s.References {
			if r.RefType == "CHILD_OF" {
				child = true
			}
		}
		if !child {
			return s, true
		}
	}
	return apiSpan{}, false
}

// named returns the spans of tr whose operation name starts with prefix, ordered
// by start time (ties keep Jaeger's order).
func (tr *apiTrace) named(prefix string) []apiSpan {
	var out []apiSpan
	for _, s := range tr.Spans {
		if strings.HasPrefix(s.OperationName, prefix) {
			out = append(out, s)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].StartTime < out[j].StartTime })
	return out
}

// process returns the process (resource) of span s.
func (tr *apiTrace) process(s apiSpan) apiProcess { return tr.Processes[s.ProcessID] }

// isError reports whether Jaeger shows s as an error: the error=true tag that it
// derives from the OTel status, and otel.status_code=ERROR.
func isError(s apiSpan) bool {
	v, _ := tag(s.Tags, "error")
	return v == true && tagString(s.Tags, "otel.status_code") == "ERROR"
}

// dump writes tr's JSON to $E2E_TRACE_DIR/<name>.json when E2E_TRACE_DIR is set.
func dump(t *testing.T, name string, tr apiTrace) {
	dir := os.Getenv("E2E_TRACE_DIR")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("E2E_TRACE_DIR: %v", err)
		return
	}
	var pretty any
	_ = json.Unmarshal(tr.raw, &pretty)
	b, _ := json.MarshalIndent(pretty, "", "  ")
	path := filepath.Join(dir, name+".json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Errorf("E2E_TRACE_DIR: %v", err)
		return
	}
	t.Logf("trace %s written to %s", tr.TraceID, path)
}
