// Heartbeats: the unconditional Registry.Heartbeat for tools, and a
// Member's heartbeat goroutine, which refreshes its entry's TTL while the
// entry is still its own and rewrites it when it vanished.

package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/stargazer/lifecycle/internal/ratelog"
	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/slotmap"
)

// heartbeatScript refreshes an entry's TTL and its index score, or, when the
// entry is gone, removes the instance from the index so the index never
// outlives its entry. Both keys share a slot (hash tag).
var heartbeatScript = newScript(`
if redis.call('PEXPIRE', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
  return 1
end
redis.call('ZREM', KEYS[2], ARGV[3])
return 0
`)

// Heartbeat extends the TTL of an instance's entry and its index score, in
// one round trip (a script on the service's slot). found is false when the
// entry no longer exists (expired, flushed, evicted, Redis restarted); the
// caller should then Register again. Heartbeat never creates an entry.
func (r *Registry) Heartbeat(ctx context.Context, service, instance string) (found bool, err error) {
	if err := ValidateNames(service, instance); err != nil {
		return false, err
	}
	score := r.cfg.clock.Now().Add(r.cfg.ttl).UnixMilli()
	n, err := heartbeatScript.Run(ctx, r.c,
		[]string{EntryKey(service, instance), IndexKey(service)},
		r.cfg.ttl.Milliseconds(), score, instance).Int()
	if err != nil {
		return false, fmt.Errorf("registry: heartbeat of %s: %w", EntryKey(service, instance),
			redisacl.Explain(r.failed(err), redisacl.Instance, scriptRefusal(heartbeatScript, EntryKey(service, instance), IndexKey(service))))
	}
	return n == 1, nil
}

// StartHeartbeat starts the heartbeat goroutine: every HeartbeatInterval (on
// the registry's clock) it extends the entry's TTL and index score while the
// entry is still this member's, in one round trip. When the entry has
// vanished, no longer holds a JSON object, or its key (or the index key) has
// the wrong type, it rewrites the latest entry (services set included),
// logging a rewrite of foreign data at warn, naming the key and the type
// found; the registry's keys are the registry's, so it replaces what it finds
// there. When another process owns the entry the member writes nothing (see
// Conflict), and the heartbeat only watches the entry: once that process's
// entry is gone (deregistered, or expired) it takes the entry back, within
// one interval.
// Failures are logged at warn, the first at once and then at most one a
// minute with the count left out, and retried at the next tick (on Redis
// Cluster, a failure that says the slot map is stale is retried once more,
// half a second later, by the reloaded map: see "Failover" in the package
// documentation); the first success after them is logged at info. Calling
// StartHeartbeat while it runs, or after Close, does nothing.
func (m *Member) StartHeartbeat() {
	m.hbMu.Lock()
	defer m.hbMu.Unlock()
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if m.hbDone != nil || closed {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	// Created here, not in the goroutine, so that a fake clock sees the
	// ticker as soon as StartHeartbeat returns.
	ticker := m.r.cfg.clock.NewTicker(m.r.HeartbeatInterval())
	m.hbCancel, m.hbDone = cancel, done
	go func() {
		defer close(done)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.Chan():
				m.beat(ctx)
			}
		}
	}()
}

func (m *Member) beat(ctx context.Context) {
	defer func() {
		m.mu.Lock()
		m.beats++
		m.mu.Unlock()
	}()
	err := m.beatOnce(ctx)
	if err != nil && !errors.Is(err, errNoBeat) && slotmap.Reload(m.r.c, err) {
		// A cluster whose slot map was stale (a master died, a replica took
		// its slots over): the client reloads it now; one retry once the new
		// map is in keeps the entry alive instead of waiting a whole interval
		// with the old one.
		t := m.r.cfg.clock.NewTimer(slotmap.MinInterval)
		select {
		case <-t.Chan():
			err = m.beatOnce(ctx)
		case <-ctx.Done():
			t.Stop()
		}
	}
	switch {
	case errors.Is(err, errNoBeat):
	case err != nil:
		m.beatFailed(ctx, err)
	default:
		m.beatOK(ctx)
	}
}

// errNoBeat: the member writes no entry (deregistered, nothing to write yet,
// or another process owns it): nothing was refreshed, nothing failed.
var errNoBeat = errors.New("registry: no entry to refresh")

// beatOnce runs one heartbeat: the script, and the rewrite of an entry that
// vanished or holds foreign data. It returns nil when the entry is refreshed
// or rewritten, errNoBeat when the member writes no entry (it may have just
// found another process's token in it), and the error that failed it
// otherwise.
func (m *Member) beatOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.r.cfg.writeTimeout)
	defer cancel()
	m.mu.Lock()
	skip := m.deregistered || !m.hasEntry
	conflicted := m.conflict != nil
	m.mu.Unlock()
	if skip {
		return errNoBeat
	}
	key := EntryKey(m.service, m.instance)
	score := m.r.cfg.clock.Now().Add(m.r.cfg.ttl).UnixMilli()
	vals, err := memberHeartbeatScript.Run(ctx, m.r.c, []string{key, IndexKey(m.service)},
		m.r.cfg.ttl.Milliseconds(), score, m.instance, m.owner).Slice()
	if err != nil {
		err = redisacl.Explain(err, redisacl.Instance, scriptRefusal(memberHeartbeatScript, key, IndexKey(m.service)))
		return fmt.Errorf("registry: heartbeat of %s: %w", key, err)
	}
	n, found := scriptReply(vals)
	if n == 1 {
		return nil
	}
	if len(found) > 1 && found[0] == "other" {
		m.lose(found[1]) // logs once: a member that lost the entry already knows
		return errNoBeat
	}
	if conflicted {
		// The process that took the entry over is gone (it deregistered, or
		// its entry expired): the entry is this member's again.
		m.reclaim()
	}
	// Vanished, not JSON, or a key of the wrong type: write the entry again
	// (the write reports what it replaced).
	if err := m.writeLatest(ctx); err != nil {
		return fmt.Errorf("registry: rewriting %s: %w", key, err)
	}
	if m.Conflict() != nil {
		return errNoBeat
	}
	if len(found) > 0 && found[0] == "none" {
		m.log.Info("registry: entry had vanished; re-registered")
	}
	return nil
}

// beatFailed logs a heartbeat failure at warn, rate-limited; a failure caused
// by StopHeartbeat is not one.
func (m *Member) beatFailed(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	m.mu.Lock()
	m.beatFailures++
	m.beatErr = err
	m.mu.Unlock()
	m.hbFailing = true
	m.hbLog.Log(ctx, slog.LevelWarn, "registry: heartbeat failed", "error", err)
}

func (m *Member) beatOK(ctx context.Context) {
	m.mu.Lock()
	m.beatErr = nil
	m.mu.Unlock()
	if !m.hbFailing {
		return
	}
	m.hbFailing = false
	m.log.InfoContext(ctx, "registry: heartbeat recovered", ratelog.SuppressedKey, m.hbLog.Reset())
}

// StopHeartbeat stops the heartbeat goroutine and waits for it to exit; a
// heartbeat in flight is cancelled. It does nothing if none runs.
func (m *Member) StopHeartbeat() {
	m.hbMu.Lock()
	defer m.hbMu.Unlock()
	if m.hbDone == nil {
		return
	}
	m.hbCancel()
	<-m.hbDone
	m.hbCancel, m.hbDone = nil, nil
}
