package dashboard

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/stargazer/lifecycle/controlops"
)

// PermissionTTL is how long the dashboard keeps the answer of a permission
// check of a service (controlops.Client.CheckPermission) before it checks
// again: a user given the sg-operator rules gets its actions back within it.
// A refused send is recorded at once.
const PermissionTTL = time.Minute

// permissions caches, per service, whether the dashboard's Redis user may
// send ops to it and follow their results.
type permissions struct {
	mu sync.Mutex
	m  map[string]permission
}

type permission struct {
	at     time.Time
	denied string // why the user cannot send ops; "" when it can
}

// denied returns, for each service of names whose ops this dashboard's Redis
// user cannot send or follow, why (the refused call, the role to use and
// its rule), from CheckPermission's answer of the last PermissionTTL, asked
// again when older. A check that Redis did not answer denies nothing (a send
// would say what is wrong) and is not kept. Read-only dashboards check
// nothing: they have no actions.
func (s *Server) denied(ctx context.Context, names []string) map[string]string {
	if s.cfg.ReadOnly {
		return nil
	}
	now := s.cfg.Now()
	out := map[string]string{}
	for _, name := range names {
		s.perms.mu.Lock()
		p, ok := s.perms.m[name]
		s.perms.mu.Unlock()
		if !ok || now.Sub(p.at) >= PermissionTTL || now.Before(p.at) {
			err := s.client.CheckPermission(ctx, name)
			var perr *controlops.PermissionError
			switch {
			case err == nil:
				p = s.remember(name, now, "")
			case errors.As(err, &perr):
				p = s.remember(name, now, perr.Error())
			default:
				s.cfg.Logger.Warn("dashboard: checking the Redis user's permission to send ops", "service", name, "error", err)
				continue
			}
		}
		if p.denied != "" {
			out[name] = p.denied
		}
	}
	return out
}

// refused records that Redis refused a send to service (err, matching
// controlops.ErrNoPermission): the pages disable its actions at once.
func (s *Server) refused(service string, err error) string {
	why := err.Error()
	var perr *controlops.PermissionError
	if errors.As(err, &perr) {
		why = perr.Error()
	}
	s.remember(service, s.cfg.Now(), why)
	return why
}

func (s *Server) remember(service string, at time.Time, denied string) permission {
	p := permission{at: at, denied: denied}
	s.perms.mu.Lock()
	defer s.perms.mu.Unlock()
	if s.perms.m == nil {
		s.perms.m = map[string]permission{}
	}
	s.perms.m[service] = p
	return p
}
