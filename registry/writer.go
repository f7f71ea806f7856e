// A Member's writer: the goroutine that delivers the latest entry and the
// queued events, retrying with backoff until Redis answers.

package registry

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/invisible"
)

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
	reportFixes(m.log, w, m.service, m.instance)
	if !cas && res.prevState == "entry" {
		var prev Entry
		if json.Unmarshal([]byte(res.prev), &prev) == nil && prev.Owner != m.owner {
			if prev.Host == m.host && prev.PID == m.pid {
				// The process this one replaced by exec: same pid, new token.
				m.log.Info("registry: took the entry over from the process image this one replaced",
					"previous_host", prev.Host, "previous_pid", prev.PID)
			} else {
				// The entry had not expired: its writer may still run.
				m.log.Warn("registry: took over an entry that had not expired, written by another process; if it still runs, two processes share this instance id (it stops writing the entry until this one's is gone)",
					"previous_host", invisible.Text(short(prev.Host)), "previous_pid", prev.PID)
			}
		}
	}
}

// run is the writer: it delivers work until Close asks it to drain and
// nothing is left, or until its ctx is cancelled. After a failed write it
// waits the backoff's jittered wait (WithRetryBackoff) on the registry's
// clock; the backoff logs the first failure of an outage at warn (then at
// most one a minute, counting the rest) and the recovery at info.
func (m *Member) run() {
	defer close(m.done)
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
			m.backoff.Succeeded(m.ctx)
			continue
		}
		if !m.backoff.Retry(m.ctx, err) {
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
