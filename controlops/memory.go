package controlops

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/blockread"
	"github.com/stargazer/lifecycle/internal/redisacl"
)

// DefaultReplayMemory is how many nonces a Daemon remembers at most (see
// WithReplayMemory). A nonce is held for its op's window, at most MaxTTL plus
// twice the skew, so the default allows over 30 signed ops a second, per
// instance, for as long as that window lasts; it costs at most a few MB.
const DefaultReplayMemory = 10000

// replayMemory is the daemon's own record of the nonces it accepted, so that
// wiping Redis (FLUSHALL, a restart, a DEL of the nonce claim) reopens no
// replay. Each nonce is held until its op's window closes (issued_at + ttl_ms
// + skew), when the op would be rejected as expired anyway; expired nonces are
// evicted first, in expiry order. When max unexpired nonces are held, claim
// refuses (ErrReplayMemoryFull) rather than forgetting one that could then be
// replayed. Its methods are safe for concurrent use.
type replayMemory struct {
	mu      sync.Mutex
	max     int
	byNonce map[string]*memEntry
	order   expiryHeap
}

type memEntry struct {
	nonce   string
	entry   string // stream ID of the entry that used it; "" when handed over
	issued  time.Time
	expires time.Time
}

func newReplayMemory(max int) *replayMemory {
	return &replayMemory{max: max, byNonce: map[string]*memEntry{}}
}

// claim records nonce as used by the stream entry entry (an op issued at
// issued whose window closes at expires). It returns nil when the nonce is
// new, or was used by this same entry (the entry read again after a Redis
// error); an error matching ErrReplayed when another entry used it; an error
// matching ErrReplayMemoryFull when max unexpired nonces are held.
func (m *replayMemory) claim(nonce, entry string, issued, expires, now time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.evictLocked(now)
	if e, ok := m.byNonce[nonce]; ok {
		if e.entry != "" && e.entry == entry {
			return nil
		}
		by := "entry " + e.entry
		if e.entry == "" {
			by = "this instance's previous process"
		}
		return fmt.Errorf("%w: nonce %q was first used by %s", ErrReplayed, nonce, by)
	}
	if len(m.byNonce) >= m.max {
		return fmt.Errorf("%w: %d nonces held, the first expires at %s", ErrReplayMemoryFull, len(m.byNonce),
			m.order[0].expires.UTC().Format(time.RFC3339))
	}
	m.addLocked(&memEntry{nonce: nonce, entry: entry, issued: issued, expires: expires})
	return nil
}

// seed records nonces handed over by the previous process, whatever the
// bound (they are at most MaxHandedNonces).
func (m *replayMemory) seed(ns []HandedNonce, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range ns {
		if _, ok := m.byNonce[n.Nonce]; ok || !n.Expires.After(now) {
			continue
		}
		m.addLocked(&memEntry{nonce: n.Nonce, issued: n.Issued, expires: n.Expires})
	}
}

func (m *replayMemory) addLocked(e *memEntry) {
	m.byNonce[e.nonce] = e
	heap.Push(&m.order, e)
}

func (m *replayMemory) evictLocked(now time.Time) {
	for len(m.order) > 0 && !m.order[0].expires.After(now) {
		e := heap.Pop(&m.order).(*memEntry)
		delete(m.byNonce, e.nonce)
	}
}

// len returns how many nonces are held, expired ones evicted first.
func (m *replayMemory) len(now time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.evictLocked(now)
	return len(m.byNonce)
}

// issuedSince returns the unexpired nonces of ops issued at or after t.
func (m *replayMemory) issuedSince(t, now time.Time) []HandedNonce {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.evictLocked(now)
	var out []HandedNonce
	for _, e := range m.byNonce {
		if !e.issued.Before(t) {
			out = append(out, HandedNonce{Nonce: e.nonce, Issued: e.issued, Expires: e.expires})
		}
	}
	return out
}

// expiryHeap orders entries by expiry, soonest first (container/heap).
type expiryHeap []*memEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires.Before(h[j].expires) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(*memEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	n := len(old)
	e := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return e
}

// claimNonce claims op's nonce for this instance until the op's window closes.
// The value is the entry's stream ID, so a claim whose reply was lost is
// recognised as ours when the entry is read again.
func (d *Daemon) claimNonce(ctx context.Context, op Op) error {
	key := NonceKey(d.svc, d.inst, op.Nonce)
	exp := op.IssuedAt.Add(op.TTL + d.cfg.skew).Sub(d.cfg.clock.Now())
	exp = max(exp, time.Second)
	ctx, cancel := d.call(ctx)
	defer cancel()
	ok, err := d.rdb.SetNX(ctx, key, op.StreamID, exp).Result()
	if redisacl.Refused(err) {
		return fmt.Errorf("controlops: claiming the nonce: SET NX %s: %w", key, refused(redisacl.Instance, err, "SET", key))
	}
	if err != nil {
		return fmt.Errorf("%w: SET NX %s: %w", errRetry, key, err)
	}
	if ok {
		return nil
	}
	// Through the guarded reader: a claim bloated by someone else is not ours.
	v, err := d.reader.Get(ctx, key).Result()
	if redisacl.Refused(err) {
		return fmt.Errorf("controlops: claiming the nonce: GET %s: %w", key, refused(redisacl.Instance, err, "GET", key))
	}
	if err != nil && !errors.Is(err, redis.Nil) && !errors.Is(err, blockread.ErrTooLarge) {
		return fmt.Errorf("%w: GET %s: %w", errRetry, key, err)
	}
	if v == op.StreamID {
		return nil
	}
	return fmt.Errorf("%w: nonce %q was first used by entry %s", ErrReplayed, op.Nonce, v)
}
