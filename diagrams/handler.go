package diagrams

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/stargazer/lifecycle/phases"
)

// svgTimeout bounds one dot run for the handler, whatever the request context.
const svgTimeout = 10 * time.Second

// Handler serves the diagram of t with the state current returns highlighted,
// reading current once per request (a nil current highlights nothing).
//
// It answers GET and HEAD; other methods get 405. The query parameter format
// chooses the rendering:
//
//   - mermaid (the default): text/plain; charset=utf-8
//   - dot: text/vnd.graphviz; charset=utf-8
//   - svg: image/svg+xml, rendered by Graphviz dot; 501 naming the missing
//     binary when dot is not installed, 500 when it fails
//
// and any other value gets 400 naming it. Responses are marked no-store, since the
// highlight moves with the machine. SVG renderings are cached per highlighted
// state, so a polling dashboard runs dot at most once per state; t must therefore
// not change after Handler is called.
func Handler(t *phases.Table, current func() phases.State) http.Handler {
	return &handler{table: t, current: current, svg: map[phases.State][]byte{}}
}

type handler struct {
	table   *phases.Table
	current func() phases.State

	mu  sync.Mutex
	svg map[phases.State][]byte // by highlighted state; "" for none
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, fmt.Sprintf("diagrams: method %s not allowed: use GET", r.Method), http.StatusMethodNotAllowed)
		return
	}
	var state phases.State
	if h.current != nil {
		state = h.current()
	}
	if _, ok := h.table.State(state); !ok {
		state = "" // nothing to highlight; keeps the cache bounded by the table
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")

	format := r.URL.Query().Get("format")
	switch format {
	case "", "mermaid":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(Mermaid(h.table, Highlight(state)))
	case "dot":
		w.Header().Set("Content-Type", "text/vnd.graphviz; charset=utf-8")
		_, _ = w.Write(DOT(h.table, Highlight(state)))
	case "svg":
		body, err := h.renderSVG(r.Context(), state)
		switch {
		case errors.Is(err, ErrNoGraphviz):
			http.Error(w, err.Error(), http.StatusNotImplemented)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "image/svg+xml")
		_, _ = w.Write(body)
	default:
		http.Error(w, fmt.Sprintf("diagrams: unknown format %q: want mermaid, dot or svg", format), http.StatusBadRequest)
	}
}

func (h *handler) renderSVG(ctx context.Context, state phases.State) ([]byte, error) {
	h.mu.Lock()
	body, ok := h.svg[state]
	h.mu.Unlock()
	if ok {
		return body, nil
	}
	ctx, cancel := context.WithTimeout(ctx, svgTimeout)
	defer cancel()
	// Two concurrent misses may both run dot; both results are the same bytes.
	body, err := SVG(ctx, DOT(h.table, Highlight(state)))
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.svg[state] = body
	h.mu.Unlock()
	return body, nil
}
