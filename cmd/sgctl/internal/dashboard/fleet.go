package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/cmd/sgctl/internal/optrack"
	"github.com/stargazer/lifecycle/cmd/sgctl/internal/visible"
	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/phases"
	"github.com/stargazer/lifecycle/registry"
)

// instance is one registry entry as the pages show it.
type instance struct {
	registry.Entry
	// Heartbeat is when the instance last refreshed its entry: the index
	// score (its expiry) minus the TTL. Zero when unknown.
	Heartbeat time.Time `json:"heartbeat_at"`
	// Group is the status's group in the table ("unknown" for a status
	// the table does not have).
	Group string `json:"group"`
}

// service is one service's instances and their count per state.
type service struct {
	Name      string       `json:"name"`
	Counts    []stateCount `json:"counts"`
	Instances []instance   `json:"instances"`
	Err       string       `json:"error,omitempty"`
	Insecure  int          `json:"insecure"`
	// Denied says why this dashboard's Redis user cannot send ops to the
	// service (the refused call, the role to use); empty when it can, or in
	// a read-only dashboard.
	Denied string `json:"denied,omitempty"`
}

type stateCount struct {
	State string `json:"state"`
	Group string `json:"group"`
	N     int    `json:"n"`
}

// fleet reads the services named (every service in the registry when
// names is nil) with their live instances and heartbeats. A service whose
// keys Redis refuses is listed with its error; a Redis that does not answer
// fails the whole read.
func (s *Server) fleet(ctx context.Context, names []string) ([]service, error) {
	if names == nil {
		var err error
		if names, err = s.reg.Services(ctx); err != nil {
			return nil, err
		}
		names = slices.DeleteFunc(names, func(n string) bool { return registry.ValidateNames(n, "x") != nil })
	}
	now := s.cfg.Now()
	denied := s.denied(ctx, names)
	out := make([]service, 0, len(names))
	for _, name := range names {
		sv := service{Name: name, Denied: denied[name]}
		// The registry's one listing, as sgctl ps and a Watcher's resync read it.
		ins, err := s.reg.List(ctx, name)
		if err != nil {
			if unreachable(err) {
				return nil, err
			}
			sv.Err = err.Error()
		}
		sv.Instances = s.instances(now, ins)
		sv.Counts = s.counts(sv.Instances)
		for _, in := range sv.Instances {
			if in.Control == string(controlops.ModeInsecure) {
				sv.Insecure++
			}
		}
		out = append(out, sv)
	}
	return out, nil
}

// instances turns listed instances into what the pages, /api/fleet and the
// live updates show: each string field cut to a cell (cutEntry); an
// Expires of zero leaves the heartbeat unknown.
func (s *Server) instances(now time.Time, ins []registry.Instance) []instance {
	out := make([]instance, len(ins))
	for i, in := range ins {
		v := instance{Entry: cutEntry(in.Entry), Group: s.group(in.Status)}
		if !in.Expires.IsZero() { // zero: the index score was not read
			hb := in.Expires.Add(-s.cfg.TTL)
			// A writer's clock ahead of ours would date it in the future.
			if hb.Before(now) {
				v.Heartbeat = hb
			} else {
				v.Heartbeat = now
			}
		}
		out[i] = v
	}
	return out
}

// counts counts instances per state, in the table's order, then the
// statuses the table does not have.
func (s *Server) counts(ins []instance) []stateCount {
	n := map[string]int{}
	for _, in := range ins {
		n[in.Status]++
	}
	var out []stateCount
	for _, st := range s.table.States {
		if c := n[string(st.Name)]; c > 0 {
			out = append(out, stateCount{string(st.Name), string(st.Group), c})
			delete(n, string(st.Name))
		}
	}
	var rest []string
	for k := range n {
		rest = append(rest, k)
	}
	slices.Sort(rest)
	for _, k := range rest {
		out = append(out, stateCount{visible.Clean(k), "unknown", n[k]})
	}
	return out
}

// unreachable reports whether err says Redis cannot be talked to, as
// opposed to Redis answering with an error.
func unreachable(err error) bool {
	var re redis.Error
	return !errors.As(err, &re) && !errors.Is(err, registry.ErrInvalidName)
}

// pageConfig is what app.js needs, embedded in each page as JSON.
type pageConfig struct {
	Page      string            `json:"page"`
	Service   string            `json:"service,omitempty"`
	Instance  string            `json:"instance,omitempty"`
	After     string            `json:"after"` // the events stream id the page is current to
	Groups    map[string]string `json:"groups"`
	TTLms     int64             `json:"ttl_ms"`
	Signed    bool              `json:"signed"`
	ReadOnly  bool              `json:"read_only"`
	BootState []string          `json:"boot_states"`
	// Ops are the statuses each op runs from (optrack's specs, read from
	// the lifecycle table): app.js offers an op only there.
	Ops map[string][]string `json:"ops"`
	// Denied says, per service, why the dashboard's Redis user cannot send
	// it ops: app.js disables its actions, with that as their title.
	Denied map[string]string `json:"denied,omitempty"`
	// CSRF is the token app.js sends in X-CSRF-Token with every POST: the
	// session's, or without a token the one made when the dashboard started.
	CSRF string `json:"csrf"`
	// Session: the page was asked for with a session cookie, so app.js
	// shows Log out.
	Session bool `json:"session,omitempty"`
}

func (s *Server) pageConfig(r *http.Request, page, svc, inst, after string) pageConfig {
	c := pageConfig{Page: page, Service: svc, Instance: inst, After: after, Groups: s.groups,
		TTLms: s.cfg.TTL.Milliseconds(), Signed: len(s.cfg.ControlKey) > 0, ReadOnly: s.cfg.ReadOnly,
		Ops: map[string][]string{}}
	who := callerOf(r)
	c.CSRF, c.Session = who.csrf, who.session != ""
	for _, op := range optrack.Ops() {
		spec, _ := optrack.SpecOf(op)
		c.Ops[op] = spec.From
	}
	for _, st := range s.table.States {
		if st.Group == phases.GroupBoot {
			c.BootState = append(c.BootState, string(st.Name))
		}
	}
	return c
}

// fleetView is the data of the fleet and service pages.
type fleetView struct {
	Title    string
	Services []service
	Total    int
	Recent   []eventView
	Config   pageConfig
	Signed   bool
	ReadOnly bool
	Now      time.Time
	Single   bool // one service's page
}

func (s *Server) fleetPage(w http.ResponseWriter, r *http.Request) { s.fleetOrService(w, r, nil) }

func (s *Server) servicePage(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if err := registry.ValidateNames(name, "x"); err != nil {
		http.Error(w, fmt.Sprintf("dashboard: service %q: %v", visible.Cell(name), err), http.StatusBadRequest)
		return
	}
	s.fleetOrService(w, r, []string{name})
}

func (s *Server) fleetOrService(w http.ResponseWriter, r *http.Request, names []string) {
	ctx := r.Context()
	// The stream position is read first: every transition after it reaches
	// the page over /events, so nothing between this read and the page's
	// stream is lost (some may be applied twice, which changes nothing).
	after, recent, err := s.recentEvents(ctx, names, 20)
	if err == nil {
		var svcs []service
		if svcs, err = s.fleet(ctx, names); err == nil {
			v := fleetView{Title: "fleet", Services: svcs, Recent: recent, Signed: len(s.cfg.ControlKey) > 0,
				ReadOnly: s.cfg.ReadOnly, Now: s.cfg.Now(), Single: names != nil}
			page := "fleet"
			if names != nil {
				v.Title, page = names[0], "service"
			}
			for _, sv := range svcs {
				v.Total += len(sv.Instances)
			}
			v.Config = s.pageConfig(r, page, strings.Join(names, ""), "", after)
			v.Config.Denied = map[string]string{}
			for _, sv := range svcs {
				if sv.Denied != "" {
					v.Config.Denied[sv.Name] = sv.Denied
				}
			}
			s.render(w, http.StatusOK, "fleet.html", v)
			return
		}
	}
	s.redisFailed(w, err)
}

func (s *Server) redisFailed(w http.ResponseWriter, err error) {
	s.cfg.Logger.Warn("dashboard: reading Redis", "error", err)
	http.Error(w, "dashboard: reading Redis: "+visible.Clean(err.Error()), http.StatusBadGateway)
}

// fleetJSON serves the fleet (or ?service=) as JSON, for app.js to refresh
// heartbeat ages and drop expired instances, and for scripts.
func (s *Server) fleetJSON(w http.ResponseWriter, r *http.Request) {
	var names []string
	if n := r.URL.Query().Get("service"); n != "" {
		if err := registry.ValidateNames(n, "x"); err != nil {
			http.Error(w, fmt.Sprintf("dashboard: service %q: %v", visible.Cell(n), err), http.StatusBadRequest)
			return
		}
		names = []string{n}
	}
	svcs, err := s.fleet(r.Context(), names)
	if err != nil {
		s.redisFailed(w, err)
		return
	}
	b, err := json.Marshal(map[string]any{"services": svcs, "now": s.cfg.Now().UTC()})
	if err != nil {
		http.Error(w, "dashboard: encoding the fleet: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	// visible.JSON: the values keep their meaning (app.js cleans them where
	// it shows them), but no bidi override or zero-width rune reaches a
	// reader of the raw JSON (curl, a proxy's log) unescaped.
	_, _ = w.Write(append(visible.JSON(b), '\n'))
}
