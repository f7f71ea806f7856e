package process

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/jonboulle/clockwork"
)

// A Sentinel client's news is logged at info, each line, and leaves the
// warn line of the minute to the failure that follows it.
func TestGoRedisSentinelNewsIsLoggedAtInfoAndFailuresAtWarnOnceAMinute(t *testing.T) {
	logs := &lockedWriter{b: &bytes.Buffer{}}
	l := newRedisLogger(logs.logger(), clockwork.NewFakeClock())
	ctx := context.Background()
	l.Printf(ctx, "sentinel: selected addr=%s masterAddr=%s", "127.0.0.1:26379", "127.0.0.1:6379")
	l.Printf(ctx, "sentinel: new master=%q addr=%q", "m", "127.0.0.1:6380")
	l.Printf(ctx, "sentinel: discovered new sentinel=%q for master=%q", "x", "m")
	for range 3 {
		l.Printf(ctx, "redis: connection pool: failed to dial after %d attempts: %v", 1, "connection refused")
	}
	l.Printf(ctx, "sentinel: GetMasterAddrByName name=%q failed: %s", "m", "i/o timeout")
	var info, warn []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		switch {
		case strings.Contains(line, "level=INFO"):
			info = append(info, line)
		case strings.Contains(line, "level=WARN"):
			warn = append(warn, line)
		}
	}
	if len(info) != 3 || !strings.Contains(info[1], `new master=\"m\"`) {
		t.Errorf("info lines %q, want the three Sentinel news lines", info)
	}
	if len(warn) != 1 || !strings.Contains(warn[0], "failed to dial") {
		t.Errorf("warn lines %q, want the first failure only (the rest within the minute are counted)", warn)
	}
}
