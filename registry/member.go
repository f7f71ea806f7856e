package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/stargazer/lifecycle/internal/ratelog"
	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/retry"
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
//     so no event is read before the entry it announces), retrying until
//     Redis answers with exponential backoff and full jitter on the
//     registry's clock (WithRetryBackoff), so a fleet that lost Redis at one
//     instant does not come back in lockstep. The entry therefore exists
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
// replaced by exec, which keeps the pid and the instance id; a process still
// running with the same instance id): taking over an entry that had not
// expired from another pid is logged at warn. Every later write (status,
// Register, heartbeat) and the delete of Deregister is a compare-and-set on
// the token, in a script on the service's slot. When one finds another
// owner's token, another process runs with the same instance id: the Member
// logs it at warn, naming both processes' host and pid, reports it by
// Conflict, and writes and deletes no entry while that process's entry is
// there; its heartbeat watches the entry, and takes it back within one
// interval once it is gone (that process deregistered, or its entry
// expired), logging that at warn too. Its events still reach the stream
// (they are true, and sgctl watch shows them).
//
// All methods are safe for concurrent use.
type Member struct {
	r        *Registry
	service  string
	instance string
	owner    string
	// host and pid are the process's, from the initial entry: a take-over
	// of an entry of the same host and pid is of the image exec replaced.
	host string
	pid  int
	// log is the registry's logger with service and instance: every line
	// the member writes names them once.
	log *slog.Logger

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
	beatErr      error // error of the last heartbeat; nil after a success

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

	// Used by the writer goroutine only.
	backoff *retry.Backoff

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
// keys, ErrTooLong when a field is longer than the registry writes (it names
// the field and the limit: MaxErrorLen for Error, MaxValueLen for the others).
func (r *Registry) Member(e Entry) (*Member, error) {
	if err := ValidateNames(e.Service, e.Instance); err != nil {
		return nil, err
	}
	if err := check("entry", entryFields(&e)); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.Owner = newOwnerToken()
	log := r.cfg.log.With("service", e.Service, "instance", e.Instance)
	m := &Member{
		r:        r,
		service:  e.Service,
		instance: e.Instance,
		owner:    e.Owner,
		host:     e.Host,
		pid:      e.PID,
		latest:   e,
		log:      log,
		hbLog:    ratelog.New(log, r.cfg.clock, ratelog.DefaultInterval),
		backoff:  r.newBackoff("registry: writes", r.cfg.retry, log),
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
// zero UpdatedAt and ev.Time are set to now; a field longer than the registry
// writes is cut to MaxErrorLen (Error) or MaxValueLen (the others), ending
// with "…". When the queue is full the oldest
// queued event is dropped and counted. After Deregister only ev is written;
// after Close, Update does nothing but count ev as dropped.
func (m *Member) Update(e Entry, ev *Event) {
	e.Service, e.Instance, e.Owner = m.service, m.instance, m.owner
	e = m.r.normalize(e)
	cut(entryFields(&e))
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
		cut(eventFields(&ev))
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

// Register records e as the latest entry and writes it synchronously,
// re-enabling entry writes after a Deregister, together with the events
// still queued: the entry script, SADD services and the XADDs go in one
// pipelined round trip (on Redis Cluster the entry first, then the events,
// as every write of the member), whatever the writer managed to send
// before. If the entry's write fails, Register returns the error and the
// writer keeps retrying it in the background, services set included, as
// for Update. When another process owns the entry, Register writes nothing
// and returns nil: the conflict is logged and reported by Conflict, and is
// no Redis failure.
//
// The events are delivered here so that a Redis user that may write the
// entry but not sg:events is found at registration: Register returns that
// refusal (ErrNoPermission, naming the rule). Any other failure of the
// events is left to the writer, which retries them.
func (m *Member) Register(ctx context.Context, e Entry) error {
	e.Service, e.Instance, e.Owner = m.service, m.instance, m.owner
	e = m.r.normalize(e)
	cut(entryFields(&e))
	m.mu.Lock()
	m.latest, m.hasEntry = e, true
	m.seq++
	seq := m.seq
	m.registered, m.deregistered = true, false
	m.mu.Unlock()
	err := m.flush(ctx)
	m.mu.Lock()
	entryDone := m.written >= seq || m.conflict != nil
	more := len(m.queue) > 0 || m.entryPendingLocked()
	m.mu.Unlock()
	if more || err != nil {
		m.signal()
	}
	switch {
	case err == nil:
		return nil
	case !entryDone:
		if inner := errors.Unwrap(err); inner != nil {
			err = inner // the command's error, not flush's "writing ... and n events"
		}
		return fmt.Errorf("registry: registering %s: %w", EntryKey(m.service, m.instance), err)
	case errors.Is(err, ErrNoPermission):
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
	cut(entryFields(&e))
	m.mu.Lock()
	m.latest, m.hasEntry = e, true
	m.seq++
	m.registered, m.deregistered = true, false
	m.mu.Unlock()
	m.signal()
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
		return fmt.Errorf("registry: deregistering %s: %w", key,
			redisacl.Explain(m.r.failed(err), redisacl.Instance, scriptRefusal(memberDeregisterScript, key, IndexKey(m.service))))
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

// Failing returns what failed the member's last write or its last
// heartbeat, while either failed; nil once both last succeeded (or never
// ran). Redis refusing writes (OOM, READONLY, MISCONF, NOPERM, LOADING)
// shows here within one heartbeat, even on an instance with nothing to
// write; the lifecycle reports it as its registry:writes health check.
func (m *Member) Failing() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lastErr != nil {
		return m.lastErr
	}
	return m.beatErr
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
