package lifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jonboulle/clockwork"

	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/internal/ratelog"
)

// IdentityCheck is the /healthz check that warns when another process writes
// this instance's registry entry: two processes run with one instance id
// (see "Ownership" in package registry).
const IdentityCheck = "registry:identity"

// identityHealthOptions adds the non-required registry:identity check when
// the instance has Redis: it passes until the registry member finds another
// process's owner token in the entry, then warns naming both processes.
func (in *Instance) identityHealthOptions() []health.Option {
	if in.cfg.redis == nil {
		return nil
	}
	return []health.Option{health.WithCheck(IdentityCheck, func(context.Context) error {
		if m := in.member.Load(); m != nil {
			return m.Conflict()
		}
		return nil
	})}
}

// redisLogger is go-redis's logger (redis.SetLogger) routed through a slog
// logger at warn, rate-limited: during an outage go-redis prints a line per
// failed dial, several a second.
type redisLogger struct{ rl *ratelog.Logger }

func newRedisLogger(log *slog.Logger, clock clockwork.Clock) redisLogger {
	return redisLogger{rl: ratelog.New(log, clock, ratelog.DefaultInterval)}
}

// Printf implements go-redis's internal.Logging.
func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.rl.Log(ctx, slog.LevelWarn, "redis client", "line", strings.TrimSpace(fmt.Sprintf(format, v...)))
}
