package diagrams

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stargazer/lifecycle/phases"
)

func get(t *testing.T, h http.Handler, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

func TestHandlerServesMermaidByDefaultWithTheCurrentStateHighlighted(t *testing.T) {
	h := Handler(phases.Lifecycle(), func() phases.State { return phases.Configuring })
	for _, target := range []string{"/", "/?format=mermaid"} {
		rec := get(t, h, target)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: status %d: %s", target, rec.Code, rec.Body)
		}
		if ct := rec.Header().Get("Content-Type"); ct != "text/plain; charset=utf-8" {
			t.Errorf("GET %s: Content-Type %q", target, ct)
		}
		want := Mermaid(phases.Lifecycle(), Highlight(phases.Configuring))
		if rec.Body.String() != string(want) {
			t.Errorf("GET %s: body is not the highlighted Mermaid diagram:\n%s", target, rec.Body)
		}
		if !strings.Contains(rec.Body.String(), "class s_configuring current") {
			t.Errorf("GET %s: configuring is not highlighted", target)
		}
	}
}

func TestHandlerFollowsTheMachineBetweenRequests(t *testing.T) {
	var state atomic.Value
	state.Store(phases.Connecting)
	h := Handler(phases.Lifecycle(), func() phases.State { return state.Load().(phases.State) })
	if body := get(t, h, "/?format=dot").Body.String(); !strings.Contains(body, `"s_connecting" [label="2 connecting", tooltip="random jitter in [0, max], then the Redis ping gate", style="rounded,filled,bold"`) {
		t.Errorf("dot does not highlight connecting:\n%s", body)
	}
	state.Store(phases.Running)
	body := get(t, h, "/?format=dot").Body.String()
	if strings.Contains(body, `"s_connecting" [label="2 connecting", tooltip="random jitter in [0, max], then the Redis ping gate", style`) ||
		!strings.Contains(body, `"s_running" [label="running", tooltip="the service does its work", style="rounded,filled,bold"`) {
		t.Errorf("after the machine moved, dot does not highlight running alone:\n%s", body)
	}
}

func TestHandlerServesDOTAsGraphviz(t *testing.T) {
	h := Handler(phases.Lifecycle(), nil)
	rec := get(t, h, "/?format=dot")
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "text/vnd.graphviz; charset=utf-8" {
		t.Fatalf("status %d, Content-Type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	if rec.Body.String() != string(DOT(phases.Lifecycle())) {
		t.Errorf("body is not the plain DOT diagram:\n%s", rec.Body)
	}
}

func TestHandlerRejectsAnUnknownFormatNamingIt(t *testing.T) {
	rec := get(t, Handler(phases.Lifecycle(), nil), "/?format=png")
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", rec.Code)
	}
	if !strings.Contains(rec.Body.String(), `"png"`) {
		t.Errorf("body %q does not name the format", rec.Body)
	}
}

func TestHandlerRejectsOtherMethods(t *testing.T) {
	rec := httptest.NewRecorder()
	Handler(phases.Lifecycle(), nil).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: status %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

func TestHandlerSVGIsNotImplementedWithoutDot(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	rec := get(t, Handler(phases.Lifecycle(), nil), "/?format=svg")
	if rec.Code != http.StatusNotImplemented || !strings.Contains(rec.Body.String(), "install graphviz") {
		t.Errorf("status %d, body %q; want 501 saying to install graphviz", rec.Code, rec.Body)
	}
}

func TestHandlerServesSVGOverHTTP(t *testing.T) {
	requireDot(t)
	srv := httptest.NewServer(Handler(phases.Lifecycle(), func() phases.State { return phases.Running }))
	defer srv.Close()
	for i := range 2 { // the second request is served from the cache
		resp, err := http.Get(srv.URL + "/?format=svg")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/svg+xml" {
			t.Fatalf("request %d: status %d, Content-Type %q: %.300s", i, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		if !strings.Contains(string(body), "<svg") || !strings.Contains(string(body), "#ffd54f") {
			t.Errorf("request %d: body is not an SVG with running highlighted: %.300s", i, body)
		}
	}
}
