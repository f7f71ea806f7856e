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
// failed dial, several a second. A Sentinel failover client's news (the
// master it found, a new master after a failover, a Sentinel it learnt of)
// is logged at info, every line: it comes once per change, and must not
// spend the minute's warn line that a failure after it needs.
type redisLogger struct {
	log *slog.Logger
	rl  *ratelog.Logger
}

func newRedisLogger(log *slog.Logger, clock clockwork.Clock) redisLogger {
	return redisLogger{log: log, rl: ratelog.New(log, clock, ratelog.DefaultInterval)}
}

// sentinelNews are the prefixes of go-redis's lines that report a change,
// not a failure (go-redis v9 sentinel.go).
var sentinelNews = []string{"sentinel: selected addr=", "sentinel: new master=", "sentinel: discovered new sentinel="}

// Printf implements go-redis's internal.Logging.
func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	line := strings.TrimSpace(fmt.Sprintf(format, v...))
	for _, p := range sentinelNews {
		if strings.HasPrefix(line, p) {
			l.log.InfoContext(ctx, "redis client", "line", line)
			return
		}
	}
	l.rl.Log(ctx, slog.LevelWarn, "redis client", "line", line)
}
