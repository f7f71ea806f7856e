package controlops

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/blockread"
	"github.com/stargazer/lifecycle/internal/redisacl"
)

// What the daemon reads of what any Redis writer can write, bounded: see
// "Entries of any size" in the package documentation.

// opLimits bound what the daemon loads of its stream: an entry beyond them
// is rejected without being read. A page of 16 entries of the largest size
// passes the guard (blockread.Limits.guard).
var opLimits = blockread.Limits{Entry: MaxEntryLen, Fields: MaxFields, Reply: 1 << 20}

// readCount is how many entries one read of the stream returns at most.
const readCount = 16

// tooLargeErr returns the reason an oversized entry is rejected, having
// counted it and warned (at most once a minute), or nil for an entry within
// the limits.
func (d *Daemon) tooLargeErr(ctx context.Context, e blockread.Entry) error {
	if !e.Oversized {
		return nil
	}
	d.oversize.Add(ctx, 1)
	d.tooLarge.Log(ctx, slog.LevelWarn, "oversized control entry rejected unread",
		"entry", e.ID, "size", e.Why, "max_bytes", MaxEntryLen, "max_fields", MaxFields)
	return fmt.Errorf("%w: %s; an op entry holds at most %d bytes in %d fields; rejected unread",
		ErrOversized, e.Why, MaxEntryLen, MaxFields)
}

// handOver returns the restart hand-over of this instance (PendingKey) that
// cmd, an HGETALL of it through the guarded reader, read: a hash that someone
// bloated past what a hand-over holds is not one, and is ignored with a
// warning.
func (d *Daemon) handOver(cmd *redis.MapStringStringCmd) (map[string]string, error) {
	pk := PendingKey(d.svc, d.inst)
	h, err := cmd.Result()
	if errors.Is(err, blockread.ErrTooLarge) {
		d.log.Warn("restart hand-over too large to be one: ignored", "key", pk, "error", err)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("controlops: HGETALL %s: %w", pk, refused(redisacl.Instance, err, "HGETALL", pk))
	}
	return h, nil
}
