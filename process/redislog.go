package process

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/jonboulle/clockwork"

	"github.com/stargazer/lifecycle/internal/ratelog"
)

// redisLogger is go-redis's logger (redis.SetLogger) routed through a slog
// logger at warn, rate-limited: during an outage go-redis prints a line per
// failed dial, several a second. A Sentinel failover client's news (the
// master it found, a new master after a failover, a Sentinel it learnt of)
// is logged at info, every line: it comes once per change, and must not
// spend the minute's warn line that a failure after it needs.
type redisLogger struct {
	clock clockwork.Clock
	mu    sync.Mutex
	log   *slog.Logger
	rl    *ratelog.Logger
}

func newRedisLogger(log *slog.Logger, clock clockwork.Clock) *redisLogger {
	l := &redisLogger{clock: clock}
	l.setLogger(log)
	return l
}

// setLogger makes the lines go to log from now on (Run switches to the
// instance's logger once New returned).
func (l *redisLogger) setLogger(log *slog.Logger) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.log, l.rl = log, ratelog.New(log, l.clock, ratelog.DefaultInterval)
}

// sentinelNews are the prefixes of go-redis's lines that report a change,
// not a failure (go-redis v9 sentinel.go).
var sentinelNews = []string{"sentinel: selected addr=", "sentinel: new master=", "sentinel: discovered new sentinel="}

// Printf implements go-redis's internal.Logging.
func (l *redisLogger) Printf(ctx context.Context, format string, v ...any) {
	line := strings.TrimSpace(fmt.Sprintf(format, v...))
	l.mu.Lock()
	log, rl := l.log, l.rl
	l.mu.Unlock()
	for _, p := range sentinelNews {
		if strings.HasPrefix(line, p) {
			log.InfoContext(ctx, "redis client", "line", line)
			return
		}
	}
	rl.Log(ctx, slog.LevelWarn, "redis client", "line", line)
}
