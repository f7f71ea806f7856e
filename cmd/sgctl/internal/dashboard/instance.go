package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

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

// instanceParams reads ?service= and ?id=. The id is taken as it is (it is
// only a key suffix and a value to compare), so that an entry with an
// unusual id can still be looked at.
func instanceParams(w http.ResponseWriter, r *http.Request) (string, string, bool) {
	q := r.URL.Query()
	svc, id := q.Get("service"), q.Get("id")
	if err := registry.ValidateNames(svc, "x"); err != nil {
		http.Error(w, fmt.Sprintf("dashboard: service %q: %v", clean(svc), err), http.StatusBadRequest)
		return "", "", false
	}
	if id == "" || len(id) > 1024 {
		http.Error(w, "dashboard: want ?id= an instance id (at most 1024 bytes)", http.StatusBadRequest)
		return "", "", false
	}
	return svc, id, true
}

// entry reads one entry as it is in Redis, without the registry's name
// rules (a hostile id is shown, not refused); nil when there is none.
func (s *Server) entry(ctx context.Context, service, id string) (*instance, error) {
	raw, err := s.cfg.Redis.Get(ctx, registry.EntryKey(service, id)).Result()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var e registry.Entry
	if err := json.Unmarshal([]byte(raw), &e); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", registry.EntryKey(service, id), err)
	}
	li := registry.Instance{Entry: e}
	if sc, err := s.cfg.Redis.ZScore(ctx, registry.IndexKey(service), id).Result(); err == nil {
		li.Expires = time.UnixMilli(int64(sc))
	}
	in := s.instances(s.cfg.Now(), []registry.Instance{li})[0]
	return &in, nil
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
		Config: s.pageConfig("instance", svc, id, after), Denied: s.denied(ctx, []string{svc})[svc]}
	if v.Denied != "" {
		v.Config.Denied = map[string]string{svc: v.Denied}
	}
	if v.Entry, err = s.entry(ctx, svc, id); err != nil && unreachable(err) {
		s.redisFailed(w, err)
		return
	}
	if v.Entry != nil {
		b, _ := json.MarshalIndent(v.Entry.Entry, "", "  ")
		v.EntryJSON, v.State = jsonText(string(b)), v.Entry.Status
	} else if err != nil {
		v.EntryJSON = err.Error()
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
	e, err := s.entry(r.Context(), svc, id)
	if err != nil && unreachable(err) {
		s.redisFailed(w, err)
		return
	}
	wf, err := s.waterfall(r.Context(), svc, id, e)
	if err != nil {
		s.redisFailed(w, err)
		return
	}
	s.render(w, http.StatusOK, "waterfall", wf)
}

// jsonText escapes in JSON what encoding/json leaves raw although a reader
// cannot see it (bidi overrides, zero-width and C1 characters): outside
// strings JSON is ASCII, so each is inside a string, where \u escapes are
// valid.
func jsonText(s string) string {
	if !strings.ContainsFunc(s, hidden) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if hidden(r) && r > 0x7e {
			fmt.Fprintf(&b, `\u%04x`, r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
