package service

import (
	"context"

	"github.com/stargazer/lifecycle/diagrams"
	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/phases"
)

// The /healthz checks of an instance with Redis, besides health.RedisCheck.
const (
	// IdentityCheck warns when another process writes this instance's
	// registry entry: two processes run with one instance id (see
	// "Ownership" in package registry).
	IdentityCheck = "registry:identity"
	// WritesCheck fails while the registry's last write or heartbeat failed,
	// naming Redis's error (OOM, READONLY, MISCONF, NOPERM, LOADING): a
	// Redis that answers PING may still refuse writes. It is required, for
	// readiness, when Redis is (SG_REDIS_REQUIRED).
	WritesCheck = "registry:writes"
)

// setupHealth builds the health server, unless WithoutHealthServer: phase 9
// starts it, step S2 stops it.
func (in *Instance) setupHealth() error {
	if in.cfg.healthDisabled {
		return nil
	}
	hopts := []health.Option{
		health.WithAddr(in.cfg.healthAddr),
		health.WithClock(in.cfg.clock),
		health.WithLogger(in.log),
	}
	if in.cfg.redis != nil {
		hopts = append(hopts, health.WithRedis(in.cfg.redis, in.cfg.redisRequired))
		hopts = append(hopts, health.WithCheck(IdentityCheck, func(context.Context) error {
			if m, ok := in.link.member(); ok {
				return m.Conflict()
			}
			return nil
		}))
		hopts = append(hopts, health.WithCheck(WritesCheck, func(context.Context) error {
			if m, ok := in.link.member(); ok {
				return m.Failing()
			}
			return nil
		}, health.ComponentType("datastore"), health.FollowsRedisRequired()))
	}
	// The live state diagram: where is this instance, on the same picture as
	// the docs. in.m is set before any request can arrive (Start is phase 9).
	hopts = append(hopts, health.WithHandler("/debug/lifecycle",
		diagrams.Handler(in.table, func() phases.State { return in.m.Current() })))
	hopts = append(hopts, in.controlHealthOptions()...)
	hopts = append(hopts, in.cfg.healthOpts...)
	h, err := health.New(instanceSource{in}, hopts...)
	if err != nil {
		return &ConfigError{Name: in.cfg.nameSource("WithHealthAddr", "SG_HEALTH_PORT"), Value: in.cfg.healthAddr, Err: err}
	}
	in.health = h
	return nil
}

// instanceSource adapts an Instance to health.StateSource.
type instanceSource struct{ in *Instance }

func (s instanceSource) Snapshot() health.Snapshot {
	in := s.in
	// Since before the state: Machine.Since may be newer than Current during
	// a transition, never older, so a state just entered never looks wedged.
	since := in.m.Since()
	state := in.m.Current()
	info, _ := in.table.State(state)
	return health.Snapshot{
		Service:       in.cfg.name,
		Instance:      in.cfg.instance,
		Version:       in.cfg.version,
		State:         string(state),
		Phase:         info.Label,
		Role:          info.Role,
		Doc:           info.Doc,
		Since:         since,
		Degraded:      in.degraded.Load(),
		RedisRequired: in.cfg.redisRequired,
		ShuttingDown:  in.shuttingDown(),
	}
}
