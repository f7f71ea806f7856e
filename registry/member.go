package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/ratelog"
	"github.com/stargazer/lifecycle/internal/slotmap"
)

// ErrUndelivered: Close returned before every queued event and the latest
// status reached Redis.
var ErrUndelivered = errors.New("registry: updates undelivered")

// maxBatch bounds how many queued events one pipelined write carries.
const maxBatch = 256

// Member is one instance's handle on the registry. It owns up to two
// goroutines: the writer, started by Registry.Member and stopped by Close,
// and the heartbeat, started by StartHeartbeat and stopped by StopHeartbeat,
// Deregister or Close.
//
// The contract, in the order a lifecycle uses it:
//   - Update (every transition) stores the latest entry and queues the
//     transition's event; it never blocks and never fails. The writer
//     delivers them in one pipeline per batch (the entry script: SET entry
//     PX TTL and ZADD index; XADD events MAXLEN ~; on a Cluster, where the
//     two are on different nodes, the entry first and its events after it,
//     so no event is read before the entry it announces), retrying with capped,
//     clock-driven backoff until Redis answers. The entry therefore exists
//     from the first Update that reaches Redis, and converges to the latest
//     status (latest wins); queued events are delivered in order, at least
//     once.
//   - Register (phase 8) writes the latest entry synchronously and adds the
//     service to the services set; from then on every entry write does too.
//   - StartHeartbeat (phase 8.5) refreshes the TTL every HeartbeatInterval and
//     rewrites the latest entry when its key has vanished (Redis restart,
//     FLUSHALL, eviction), no longer holds a JSON object, or has the wrong
//     type. Its failures are logged at warn: the first at once, then at most
//     one a minute (on the registry's clock) with the count left out.
//   - Deregister (S3) stops every entry write first, waits for one in flight,
//     then deletes the entry: nothing recreates it afterwards, unless Register
//     is called again. Events keep flowing to the stream.
//   - Close flushes what is queued until its ctx is done, then stops and
//     awaits both goroutines.
//
// Ownership: a Member has a random owner token (Owner), written in every
// entry it writes. Its first entry write that reaches Redis takes the entry
// over, whoever wrote it before (a crashed predecessor; the process this one
// replaced by exec, which keeps the pid and the instance id). Every later
// write (status, Register, heartbeat) and the delete of Deregister is a
// compare-and-set on the token, in a script on the service's slot. When one
// finds another owner's token, another process runs with the same instance
// id: the Member logs it once at error, naming both processes' host and pid,
// reports it by Conflict, and never writes or deletes the entry again; its
// events still reach the stream (they are true, and sgctl watch shows them).
//
// All methods are safe for concurrent use.
type Member struct {
	r        *Registry
	service  string
	instance string
	owner    string

	mu           sync.Mutex
	latest       Entry
	hasEntry     bool
	seq          uint64 // version of latest; bumped by every Update and Register
	written      uint64 // version of the latest entry known to be in Redis
	registered   bool   // Register was called: entry writes also SADD the services set
	deregistered bool   // Deregister was called: no entry writes
	claimed      bool   // an entry write took the entry over: later ones are compare-and-set
	conflict     *OwnerConflictError
	closed       bool
	queue        []queued
	evSeq        uint64
	dropped      uint64
	delivered    uint64
	failures     uint64
	lastErr      error
	beats        uint64 // heartbeats run to the end, whatever their outcome
	beatFailures uint64

	// writeSem is held while an entry write is in flight, so Deregister can
	// wait for it. Taken before mu, never while holding mu.
	writeSem chan struct{}

	wake      chan struct{} // cap 1: work was added
	closing   chan struct{} // closed by Close: drain, then exit
	closeOnce sync.Once
	ctx       context.Context // the writer's; cancelled when Close gives up
	cancel    context.CancelFunc
	done      chan struct{} // closed when the writer has exited

	hbMu     sync.Mutex
	hbCancel context.CancelFunc
	hbDone   chan struct{}

	// Used by the heartbeat goroutine only.
	hbLog     *ratelog.Logger
	hbFailing bool
}

type queued struct {
	seq uint64
	ev  Event
}

// MemberStats is a snapshot of a Member's delivery state, for tests and
// health checks.
type MemberStats struct {
	QueuedEvents    int    // events waiting for delivery
	EntryPending    bool   // the latest entry has not reached Redis (false after Deregister)
	DeliveredEvents uint64 // events appended to the stream
	DroppedEvents   uint64 // events dropped: queue full (oldest first), or Update after Close
	Failures        uint64 // failed write attempts
	LastError       error  // error of the last write attempt; nil after a success
	// Heartbeats counts the heartbeats done (logged and all), whatever their
	// outcome; HeartbeatFailures those that failed.
	Heartbeats        uint64
	HeartbeatFailures uint64
}

// Member returns the handle of instance e.Instance of service e.Service, with
// a new owner token, and starts its writer goroutine; the caller must Close
// it. e is the initial entry: it is written by the first Update or Register,
// not before. The error wraps ErrInvalidName when the names cannot be used in
// keys.
func (r *Registry) Member(e Entry) (*Member, error) {
	if err := ValidateNames(e.Service, e.Instance); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.Owner = newOwnerToken()
	m := &Member{
		r:        r,
		service:  e.Service,
		instance: e.Instance,
		owner:    e.Owner,
		latest:   e,
		hbLog:    ratelog.New(r.cfg.log, r.cfg.clock, ratelog.DefaultInterval),
		writeSem: make(chan struct{}, 1),
		wake:     make(chan struct{}, 1),
		closing:  make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		done:     make(chan struct{}),
	}
	go m.run()
	return m, nil
}

// Update records e as the instance's latest entry and, when ev is not nil,
// queues ev for the events stream, then returns: it never blocks on Redis and
// never fails. e.Service and e.Instance (and ev's) are set to the member's;
// zero UpdatedAt and ev.Time are set to now. When the queue is full the oldest
// queued event is dropped and counted. After Deregister only ev is written;
// after Close, Update does nothing but count ev as dropped.
func (m *Member) Update(e Entry, ev *Event) {
	e.Service, e.Instance, e.Owner = m.service, m.instance, m.owner
	e = m.r.normalize(e)
	m.mu.Lock()
	if m.closed {
		if ev != nil {
			m.dropped++
		}
		m.mu.Unlock()
		return
	}
	m.latest, m.hasEntry = e, true
	m.seq++
	if ev != nil {
		ev := *ev
		ev.Service, ev.Instance = m.service, m.instance
		if len(m.queue) >= m.r.cfg.queueSize {
			m.queue[0] = queued{} // release the dropped event's strings
			m.queue = m.queue[1:]
			m.dropped++
		}
		m.evSeq++
		m.queue = append(m.queue, queued{seq: m.evSeq, ev: m.r.normalizeEvent(ev)})
	}
	m.mu.Unlock()
	m.signal()
}

func (m *Member) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Register records e as the latest entry and writes it synchronously (the
// entry script and SADD services, one pipelined round trip), re-enabling
// entry writes after a Deregister. If it fails, the writer keeps retrying the
// entry in the background, services set included, as for Update. When
// another process owns the entry, Register writes nothing and returns nil:
// the conflict is logged and reported by Conflict, and is no Redis failure.
func (m *Member) Register(ctx context.Context, e Entry) error {
	e.Service, e.Instance, e.Owner = m.service, m.instance, m.owner
	e = m.r.normalize(e)
	m.mu.Lock()
	m.latest, m.hasEntry = e, true
	m.seq++
	m.registered, m.deregistered = true, false
	m.mu.Unlock()
	if err := m.writeLatest(ctx); err != nil {
		m.signal()
		return err
	}
	return nil
}

// RegisterAsync records e as the latest entry and re-enables entry writes
// like Register, but leaves the write (services set included) to the writer
// and returns at once: for an instance that must not wait on Redis.
func (m *Member) RegisterAsync(e Entry) {
	e.Service, e.Instance, e.Owner = m.service, m.instance, m.owner
	e = m.r.normalize(e)
	m.mu.Lock()
	m.latest, m.hasEntry = e, true
	m.seq++
	m.registered, m.deregistered = true, false
	m.mu.Unlock()
	m.signal()
}

// writeLatest writes the latest entry with the services set, unless the
// member is deregistered, holding writeSem.
func (m *Member) writeLatest(ctx context.Context) error {
	select {
	case m.writeSem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("registry: registering %s: %w", EntryKey(m.service, m.instance), ctx.Err())
	}
	defer func() { <-m.writeSem }()
	m.mu.Lock()
	if m.deregistered || !m.hasEntry || m.conflict != nil {
		m.mu.Unlock()
		return nil
	}
	e, seq, cas := m.latest, m.seq, m.claimed
	m.mu.Unlock()
	pipe := m.r.c.Pipeline()
	w := m.r.queueEntry(ctx, pipe, e, true, cas)
	cmds, err := m.r.exec(ctx, pipe, w.calls()...)
	m.afterEntryWrite(w, seq, cas)
	if err != nil {
		return fmt.Errorf("registry: registering %s: %w", EntryKey(m.service, m.instance), cmdError(cmds, err))
	}
	return nil
}

// afterEntryWrite records the outcome of entry write w of version seq: the
// entry is written (and from now on owned), or another process owns it.
func (m *Member) afterEntryWrite(w entryWrite, seq uint64, cas bool) {
	res, err := w.result()
	if err != nil {
		return // not written; the caller reports the error
	}
	if !res.written {
		m.lose(res.prev)
		return
	}
	m.mu.Lock()
	m.claimed = true
	if seq > m.written {
		m.written = seq
	}
	m.mu.Unlock()
	m.r.reportFixes(w, m.service, m.instance)
	if !cas && res.prevState == "entry" {
		var prev Entry
		if json.Unmarshal([]byte(res.prev), &prev) == nil && prev.Owner != m.owner {
			m.r.cfg.log.Info("registry: took the entry over from a previous process",
				"service", m.service, "instance", m.instance, "previous_host", prev.Host, "previous_pid", prev.PID)
		}
	}
}

// lose records that another process owns the entry (other is its text) and
// logs it, once: from then on the member writes no entry.
func (m *Member) lose(other string) {
	host, pid := ownerOf(other)
	m.mu.Lock()
	if m.conflict != nil {
		m.mu.Unlock()
		return
	}
	c := &OwnerConflictError{Key: EntryKey(m.service, m.instance), Host: m.latest.Host, PID: m.latest.PID, OtherHost: host, OtherPID: pid}
	m.conflict = c
	m.mu.Unlock()
	m.r.cfg.log.Error("registry: another process owns this instance's entry; this process stops writing it (give each process its own instance id)",
		"service", m.service, "instance", m.instance, "key", c.Key,
		"host", c.Host, "pid", c.PID, "owner_host", c.OtherHost, "owner_pid", c.OtherPID)
}

// Owner returns the member's owner token, written in the entry's owner field.
func (m *Member) Owner() string { return m.owner }

// Conflict returns nil while the entry is this member's (or was never
// written), and an *OwnerConflictError wrapping ErrOwnerConflict once a
// write found another process's owner token in it.
func (m *Member) Conflict() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conflict == nil {
		return nil
	}
	return m.conflict
}

// run is the writer: it delivers work until Close asks it to drain and
// nothing is left, or until its ctx is cancelled.
func (m *Member) run() {
	defer close(m.done)
	var backoff time.Duration
	failing := false
	for {
		if !m.hasWork() {
			select {
			case <-m.closing:
				return
			default:
			}
			select {
			case <-m.wake:
			case <-m.closing:
			case <-m.ctx.Done():
				return
			}
			continue
		}
		err := m.flush(m.ctx)
		if m.ctx.Err() != nil {
			return
		}
		if err == nil {
			if failing {
				m.r.cfg.log.Info("registry: writes recovered", "service", m.service, "instance", m.instance)
			}
			backoff, failing = 0, false
			continue
		}
		if !failing {
			// Once per outage: the retries below would repeat it every few seconds.
			m.r.cfg.log.Warn("registry: write failed, retrying", "service", m.service, "instance", m.instance, "err", err)
			failing = true
		}
		backoff = min(max(2*backoff, m.r.cfg.backoffMin), m.r.cfg.backoffMax)
		t := m.r.cfg.clock.NewTimer(backoff)
		select {
		case <-t.Chan():
		case <-m.ctx.Done():
			t.Stop()
			return
		}
	}
}

func (m *Member) hasWork() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.entryPendingLocked() || len(m.queue) > 0
}

func (m *Member) entryPendingLocked() bool {
	return m.hasEntry && !m.deregistered && m.conflict == nil && m.written < m.seq
}

// flush writes the latest entry (if pending and not deregistered) and a batch
// of queued events in one pipeline, holding writeSem. Delivered events leave
// the queue; on a partial failure only the delivered prefix does, keeping
// order.
func (m *Member) flush(ctx context.Context) error {
	select {
	case m.writeSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-m.writeSem }()
	ctx, cancel := context.WithTimeout(ctx, m.r.cfg.writeTimeout)
	defer cancel()

	m.mu.Lock()
	pending := m.entryPendingLocked()
	e, seq, registered, cas := m.latest, m.seq, m.registered, m.claimed
	batch := make([]queued, min(len(m.queue), maxBatch))
	copy(batch, m.queue)
	m.mu.Unlock()

	pipe := m.r.c.Pipeline()
	var w entryWrite
	if pending {
		w = m.r.queueEntry(ctx, pipe, e, registered, cas)
	}
	var cmds []redis.Cmder
	var err error
	if pending && len(batch) > 0 && m.r.cluster {
		// A cluster pipeline runs each node's commands concurrently, and the
		// events stream is on another node than the entry: a reader that
		// takes an event's word and reads the entry (a Watcher) could find
		// the entry of before. The entry goes first, its events after it.
		cmds, err = m.r.exec(ctx, pipe, w.calls()...)
		m.afterEntryWrite(w, seq, cas)
		if err != nil {
			return m.writeFailed(len(batch), cmds, err)
		}
		pipe = m.r.c.Pipeline()
		pending = false
	}
	// The events stream is in another slot: XADD stays a command of its own.
	xadds := make([]*redis.StringCmd, len(batch))
	for i, q := range batch {
		xadds[i] = pipe.XAdd(ctx, m.r.xaddArgs(q.ev))
	}
	if len(xadds) > 0 || pending {
		cmds, err = m.r.exec(ctx, pipe, w.calls()...)
	}
	if pending {
		m.afterEntryWrite(w, seq, cas)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	var upTo uint64
	for i, c := range xadds {
		if c.Err() != nil {
			break
		}
		upTo = batch[i].seq
		m.delivered++
	}
	// Events dropped while the write was in flight are already gone.
	for len(m.queue) > 0 && m.queue[0].seq <= upTo {
		m.queue[0] = queued{}
		m.queue = m.queue[1:]
	}
	if err != nil {
		return m.failedLocked(len(batch), cmds, err)
	}
	m.lastErr = nil
	return nil
}

// writeFailed records a failed write of the entry and n events.
func (m *Member) writeFailed(n int, cmds []redis.Cmder, err error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failedLocked(n, cmds, err)
}

func (m *Member) failedLocked(n int, cmds []redis.Cmder, err error) error {
	m.failures++
	m.lastErr = fmt.Errorf("registry: writing %s and %d events: %w", EntryKey(m.service, m.instance), n, cmdError(cmds, err))
	return m.lastErr
}

// StartHeartbeat starts the heartbeat goroutine: every HeartbeatInterval (on
// the registry's clock) it extends the entry's TTL and index score while the
// entry is still this member's, in one round trip. When the entry has
// vanished, no longer holds a JSON object, or its key (or the index key) has
// the wrong type, it rewrites the latest entry (services set included),
// logging a rewrite of foreign data at warn, naming the key and the type
// found; the registry's keys are the registry's, so it replaces what it finds
// there. When another process owns the entry it stops (see Conflict).
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
	skip := m.deregistered || !m.hasEntry || m.conflict != nil
	m.mu.Unlock()
	if skip {
		return errNoBeat
	}
	key := EntryKey(m.service, m.instance)
	score := m.r.cfg.clock.Now().Add(m.r.cfg.ttl).UnixMilli()
	vals, err := memberHeartbeatScript.Run(ctx, m.r.c, []string{key, IndexKey(m.service)},
		m.r.cfg.ttl.Milliseconds(), score, m.instance, m.owner).Slice()
	if err != nil {
		return fmt.Errorf("registry: heartbeat of %s: %w", key, err)
	}
	n, found := scriptReply(vals)
	if n == 1 {
		return nil
	}
	if len(found) > 1 && found[0] == "other" {
		m.lose(found[1])
		return errNoBeat
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
		m.r.cfg.log.Info("registry: entry had vanished; re-registered", "service", m.service, "instance", m.instance)
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
	m.mu.Unlock()
	m.hbFailing = true
	m.hbLog.Log(ctx, slog.LevelWarn, "registry: heartbeat failed", "service", m.service, "instance", m.instance, "err", err)
}

func (m *Member) beatOK(ctx context.Context) {
	if !m.hbFailing {
		return
	}
	m.hbFailing = false
	m.r.cfg.log.InfoContext(ctx, "registry: heartbeat recovered", "service", m.service, "instance", m.instance,
		ratelog.SuppressedKey, m.hbLog.Reset())
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

// Deregister removes the instance from the registry. In order: it stops
// entry writes (a pending Update will not be written, and neither the writer
// nor the heartbeat will recreate the entry), stops the heartbeat, waits for
// an entry write already in flight (until ctx is done), then deletes the
// entry and its index member in one round trip, unless the entry holds
// another process's owner token (a compare-and-delete in a script): one
// process never removes another's entry. A member that never wrote the entry,
// or lost it to another process, deletes nothing. Queued and later events
// are still delivered. Entry writes stay stopped even when Deregister fails.
func (m *Member) Deregister(ctx context.Context) error {
	m.mu.Lock()
	m.deregistered = true
	m.mu.Unlock()
	m.StopHeartbeat()
	key := EntryKey(m.service, m.instance)
	select {
	case m.writeSem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("registry: deregistering %s: waiting for the write in flight: %w", key, ctx.Err())
	}
	defer func() { <-m.writeSem }()
	m.mu.Lock()
	ours := m.claimed && m.conflict == nil
	m.mu.Unlock()
	if !ours {
		return nil
	}
	vals, err := memberDeregisterScript.Run(ctx, m.r.c, []string{key, IndexKey(m.service)}, m.owner, m.instance).Slice()
	if err != nil {
		return fmt.Errorf("registry: deregistering %s: %w", key, m.r.failed(err))
	}
	if n, found := scriptReply(vals); n == 0 && len(found) > 0 {
		m.lose(found[0])
	}
	return nil
}

// Close stops the heartbeat, lets the writer deliver what is queued (the
// latest entry unless deregistered, and every queued event) until ctx is
// done, then stops the writer and waits for it to exit. An undelivered
// remainder is abandoned and reported as an error wrapping ErrUndelivered
// and ctx's error. A write in flight when ctx ends finishes or fails within
// the write timeout (WithWriteTimeout). Close is idempotent: later calls wait for
// the same exit and report the same remainder.
func (m *Member) Close(ctx context.Context) error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		m.mu.Unlock()
		close(m.closing)
	})
	m.StopHeartbeat()
	var ctxErr error
	select {
	case <-m.done:
	case <-ctx.Done():
		ctxErr = ctx.Err()
		m.cancel()
		<-m.done
	}
	m.cancel()
	st := m.Stats()
	if st.QueuedEvents > 0 || st.EntryPending {
		if ctxErr == nil {
			ctxErr = context.Canceled // an earlier Close gave up
		}
		return fmt.Errorf("registry: closing %s: %d events undelivered, latest entry pending %v: %w: %w",
			EntryKey(m.service, m.instance), st.QueuedEvents, st.EntryPending, ErrUndelivered, ctxErr)
	}
	return nil
}

// Stats returns a snapshot of the member's delivery state.
func (m *Member) Stats() MemberStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return MemberStats{
		QueuedEvents:    len(m.queue),
		EntryPending:    m.entryPendingLocked(),
		DeliveredEvents: m.delivered,
		DroppedEvents:   m.dropped,
		Failures:        m.failures,
		LastError:       m.lastErr,

		Heartbeats:        m.beats,
		HeartbeatFailures: m.beatFailures,
	}
}
