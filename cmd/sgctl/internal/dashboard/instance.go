package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/cmd/sgctl/internal/visible"
	"github.com/stargazer/lifecycle/registry"
)

// instanceView is the data of the instance page.
type instanceView struct {
	Service, ID string
	Entry       *instance
	EntryJSON   string
	State       string
	Waterfall   waterfall
	Config      pageConfig
	Signed      bool
	ReadOnly    bool
	// Denied says why the dashboard's Redis user cannot send ops to the
	// service; empty when it can.
	Denied string
}

// instanceParams reads ?service= and ?id=. The id is taken as it is, so
// that the page can say why an unusual id has no entry (it cannot be an
// instance id) rather than refuse to be shown; its actions are then off.
func instanceParams(w http.ResponseWriter, r *http.Request) (string, string, bool) {
	q := r.URL.Query()
	svc, id := q.Get("service"), q.Get("id")
	if err := registry.ValidateNames(svc, "x"); err != nil {
		http.Error(w, fmt.Sprintf("dashboard: service %q: %v", visible.Cell(svc), err), http.StatusBadRequest)
		return "", "", false
	}
	if id == "" || len(id) > 1024 {
		http.Error(w, "dashboard: want ?id= an instance id (at most 1024 bytes)", http.StatusBadRequest)
		return "", "", false
	}
	return svc, id, true
}

// entryRead is one instance's entry as the instance page reads it.
type entryRead struct {
	// Full is the entry and its expiry as Redis holds them, nil when there
	// is none, or when it is not this instance's (Bad).
	Full *registry.Instance
	// View is Full as the pages show it (instances: cells cut); nil with Full.
	View *instance
	// Bad says why the value under the instance's key is not its entry:
	// names that cannot be in a key, JSON that names another instance
	// (names come from keys), or no entry's JSON (registry.DecodeEntry).
	Bad error
}

// entry reads one instance's entry and its heartbeat (GET and ZSCORE) as
// the registry's readers do: an entry whose JSON names another instance
// is not this one's. The error is Redis's.
func (s *Server) entry(ctx context.Context, service, id string) (entryRead, error) {
	if err := registry.ValidateNames(service, id); err != nil {
		return entryRead{Bad: err}, nil
	}
	raw, err := s.cfg.Redis.Get(ctx, registry.EntryKey(service, id)).Result()
	if errors.Is(err, redis.Nil) {
		return entryRead{}, nil
	}
	if err != nil {
		return entryRead{}, err
	}
	e, err := registry.DecodeEntry(service, id, []byte(raw))
	if err != nil {
		return entryRead{Bad: err}, nil
	}
	full := &registry.Instance{Entry: e}
	if sc, err := s.cfg.Redis.ZScore(ctx, registry.IndexKey(service), id).Result(); err == nil {
		full.Expires = time.UnixMilli(int64(sc))
	}
	view := s.instances(s.cfg.Now(), []registry.Instance{*full})[0]
	return entryRead{Full: full, View: &view}, nil
}

func (s *Server) instancePage(w http.ResponseWriter, r *http.Request) {
	svc, id, ok := instanceParams(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	after, _, err := s.recentEvents(ctx, nil, 0)
	if err != nil {
		s.redisFailed(w, err)
		return
	}
	v := instanceView{Service: svc, ID: id, Signed: len(s.cfg.ControlKey) > 0, ReadOnly: s.cfg.ReadOnly,
		Config: s.pageConfig(r, "instance", svc, id, after), Denied: s.denied(ctx, []string{svc})[svc]}
	if v.Denied != "" {
		v.Config.Denied = map[string]string{svc: v.Denied}
	}
	read, err := s.entry(ctx, svc, id)
	if err != nil && unreachable(err) {
		s.redisFailed(w, err)
		return
	}
	switch {
	case read.Full != nil:
		// The whole entry, every value escaped: the cells elsewhere are cut.
		b, _ := json.MarshalIndent(read.Full.Entry, "", "  ")
		v.Entry, v.EntryJSON, v.State = read.View, string(visible.JSON(b)), read.View.Status
	case read.Bad != nil:
		v.EntryJSON = "not this instance's entry, so not listed: " + visible.Clean(read.Bad.Error())
	case err != nil:
		v.EntryJSON = visible.Clean(err.Error())
	}
	if v.Waterfall, err = s.waterfall(ctx, svc, id, v.Entry); err != nil {
		s.redisFailed(w, err)
		return
	}
	s.render(w, http.StatusOK, "instance.html", v)
}

func (s *Server) waterfall(ctx context.Context, svc, id string, e *instance) (waterfall, error) {
	var started = e.zeroStart()
	b, err := s.lastBoot(ctx, svc, id, started)
	if err != nil {
		return waterfall{}, err
	}
	return layout(b), nil
}

// waterfallFragment serves the waterfall alone, for app.js to replace it
// when a new boot completes.
func (s *Server) waterfallFragment(w http.ResponseWriter, r *http.Request) {
	svc, id, ok := instanceParams(w, r)
	if !ok {
		return
	}
	read, err := s.entry(r.Context(), svc, id)
	if err != nil && unreachable(err) {
		s.redisFailed(w, err)
		return
	}
	wf, err := s.waterfall(r.Context(), svc, id, read.View)
	if err != nil {
		s.redisFailed(w, err)
		return
	}
	s.render(w, http.StatusOK, "waterfall", wf)
}
