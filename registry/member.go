package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
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
//     delivers them in one pipeline per batch (SET entry PX TTL, ZADD index,
//     XADD events MAXLEN ~), retrying with capped, clock-driven backoff
//     until Redis answers. The entry therefore exists from the first Update
//     that reaches Redis, and converges to the latest status (latest wins);
//     queued events are delivered in order, at least once.
//   - Register (phase 8) writes the latest entry synchronously and adds the
//     service to the services set; from then on every entry write does too.
//   - StartHeartbeat (phase 8.5) refreshes the TTL every HeartbeatInterval and
//     re-registers the latest entry when its key has vanished (Redis restart,
//     FLUSHALL, eviction).
//   - Deregister (S3) stops every entry write first, waits for one in flight,
//     then deletes the entry: nothing recreates it afterwards, unless Register
//     is called again. Events keep flowing to the stream.
//   - Close flushes what is queued until its ctx is done, then stops and
//     awaits both goroutines.
//
// All methods are safe for concurrent use.
type Member struct {
	r        *Registry
	service  string
	instance string

	mu           sync.Mutex
	latest       Entry
	hasEntry     bool
	seq          uint64 // version of latest; bumped by every Update and Register
	written      uint64 // version of the latest entry known to be in Redis
	registered   bool   // Register was called: entry writes also SADD the services set
	deregistered bool   // Deregister was called: no entry writes
	closed       bool
	queue        []queued
	evSeq        uint64
	dropped      uint64
	delivered    uint64
	failures     uint64
	lastErr      error

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
}

// Member returns the handle of instance e.Instance of service e.Service and
// starts its writer goroutine; the caller must Close it. e is the initial
// entry: it is written by the first Update or Register, not before. The error
// wraps ErrInvalidName when the names cannot be used in keys.
func (r *Registry) Member(e Entry) (*Member, error) {
	if err := ValidateNames(e.Service, e.Instance); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Member{
		r:        r,
		service:  e.Service,
		instance: e.Instance,
		latest:   e,
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
	e.Service, e.Instance = m.service, m.instance
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

// Register records e as the latest entry and writes it synchronously (SET +
// ZADD index + SADD services, one pipelined round trip), re-enabling entry
// writes after a Deregister. If it fails, the writer keeps retrying the entry
// in the background, services set included, as for Update.
func (m *Member) Register(ctx context.Context, e Entry) error {
	e.Service, e.Instance = m.service, m.instance
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
	e.Service, e.Instance = m.service, m.instance
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
	if m.deregistered || !m.hasEntry {
		m.mu.Unlock()
		return nil
	}
	e, seq := m.latest, m.seq
	m.mu.Unlock()
	pipe := m.r.c.Pipeline()
	m.r.queueEntry(ctx, pipe, e, true)
	_, err := pipe.Exec(ctx)
	m.mu.Lock()
	if err == nil && seq > m.written {
		m.written = seq
	}
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("registry: registering %s: %w", EntryKey(m.service, m.instance), err)
	}
	return nil
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
	return m.hasEntry && !m.deregistered && m.written < m.seq
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
	var entryCmds []redis.Cmder
	pending := m.entryPendingLocked()
	e, seq, registered := m.latest, m.seq, m.registered
	batch := make([]queued, min(len(m.queue), maxBatch))
	copy(batch, m.queue)
	m.mu.Unlock()

	pipe := m.r.c.Pipeline()
	if pending {
		entryCmds = m.r.queueEntry(ctx, pipe, e, registered)
	}
	xadds := make([]*redis.StringCmd, len(batch))
	for i, q := range batch {
		xadds[i] = pipe.XAdd(ctx, m.r.xaddArgs(q.ev))
	}
	_, err := pipe.Exec(ctx)

	m.mu.Lock()
	defer m.mu.Unlock()
	if pending && cmdsOK(entryCmds) && seq > m.written {
		m.written = seq
	}
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
		m.failures++
		m.lastErr = fmt.Errorf("registry: writing %s and %d events: %w", EntryKey(m.service, m.instance), len(batch), err)
		return m.lastErr
	}
	m.lastErr = nil
	return nil
}

func cmdsOK(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		if c.Err() != nil {
			return false
		}
	}
	return true
}

// StartHeartbeat starts the heartbeat goroutine: every HeartbeatInterval (on
// the registry's clock) it extends the entry's TTL and index score, and when
// the entry has vanished it re-registers the latest entry (services set
// included). Errors are logged at debug level and retried at the next tick.
// Calling StartHeartbeat while it runs, or after Close, does nothing.
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
	ctx, cancel := context.WithTimeout(ctx, m.r.cfg.writeTimeout)
	defer cancel()
	m.mu.Lock()
	skip := m.deregistered || !m.hasEntry
	m.mu.Unlock()
	if skip {
		return
	}
	log := m.r.cfg.log.With("service", m.service, "instance", m.instance)
	found, err := m.r.Heartbeat(ctx, m.service, m.instance)
	if err != nil {
		log.Debug("registry: heartbeat failed", "err", err)
		return
	}
	if found {
		return
	}
	if err := m.writeLatest(ctx); err != nil {
		log.Debug("registry: re-registering after the entry vanished failed", "err", err)
		return
	}
	log.Info("registry: entry had vanished; re-registered")
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
// entry and its index member in one round trip. Queued and later events are
// still delivered. Entry writes stay stopped even when Deregister fails.
func (m *Member) Deregister(ctx context.Context) error {
	m.mu.Lock()
	m.deregistered = true
	m.mu.Unlock()
	m.StopHeartbeat()
	select {
	case m.writeSem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("registry: deregistering %s: waiting for the write in flight: %w", EntryKey(m.service, m.instance), ctx.Err())
	}
	defer func() { <-m.writeSem }()
	return m.r.Deregister(ctx, m.service, m.instance)
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
	}
}
