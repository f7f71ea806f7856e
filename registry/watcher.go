package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/internal/blockread"
	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/retry"
	"github.com/stargazer/lifecycle/internal/slotmap"
)

// StatusRunning is the one status consumers route to.
const StatusRunning = "running"

// DefaultWatchBlock is the longest a Watcher's XREAD blocks (WithWatchBlock).
const DefaultWatchBlock = 5 * time.Second

// ErrWatcherClosed is returned by Watcher.Next and Watcher.WaitSynced after
// Close.
var ErrWatcherClosed = errors.New("registry: watcher closed")

// View is a Watcher's picture of its service at one moment. It is immutable:
// the Watcher publishes a new View for every change, and never modifies one
// it published.
type View struct {
	// Service is the watched service.
	Service string
	// Running holds the instances whose status was running when the view
	// was built, sorted by instance id. Do not modify it. An instance stays
	// in a view after its Expires has passed until the Watcher publishes the
	// next one; Watcher.Running leaves such instances out.
	Running []Instance
	// Connected says the Watcher is following the events stream: the view
	// lags Redis by one event's delivery. False before the first resync, and
	// from the moment a read or a resync failed until a resync succeeds
	// again: the view is then as of At, and shrinks as instances' known
	// expiry times pass.
	Connected bool
	// At is when the Watcher built the view (the registry's clock); zero
	// for the empty view a Watcher starts with, before its first resync.
	At time.Time

	changed chan struct{} // closed when a newer view replaces this one, or by Close
}

// Changed returns a channel that is closed when a newer view replaces v, or
// when the Watcher is closed.
func (v *View) Changed() <-chan struct{} { return v.changed }

// Watcher is a live view of the running instances of one service, for
// routing requests to them (package balancer does, for HTTP). Registry.Watch
// starts it; Close stops it. See "Listing and watching a service" in the
// package documentation for what it reads, when it resyncs and what an
// outage does.
//
// Its reads (View, Running) are lock-free: an atomic load of an immutable
// View, cheap enough for every request. Its one goroutine, which Close stops
// and awaits, follows the events stream and resyncs. All methods are safe
// for concurrent use.
type Watcher struct {
	r       *Registry
	service string
	block   time.Duration
	log     *slog.Logger // the registry's, with service: every line names it once

	stream *blockread.Stream // sg:events, bounded; its client is ours to close when it copied it

	view   atomic.Pointer[View]
	synced chan struct{} // closed by the first successful resync
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has exited
	once   sync.Once

	// Owned by the goroutine.
	pos       string              // the events stream id read up to
	running   map[string]Instance // by instance id
	connected bool
	vanished  bool           // the last resync kept instances it did not find (see resync)
	backoff   *retry.Backoff // the waits after failed reads and resyncs, and their log lines
}

// WatchOption configures a Watcher.
type WatchOption interface{ applyWatch(*Watcher) }

type watchOptionFunc func(*Watcher)

func (f watchOptionFunc) applyWatch(w *Watcher) { f(w) }

// WithWatchBlock sets the longest a Watcher's XREAD of the events stream
// blocks (default 5s; values <= 0 are ignored). A read blocks less when a
// resync is due sooner. A Redis that stops answering is noticed when a read
// passes its block time plus the registry's write timeout.
func WithWatchBlock(d time.Duration) WatchOption {
	return watchOptionFunc(func(w *Watcher) {
		if d > 0 {
			w.block = d
		}
	})
}

// Watch starts a Watcher of service's running instances and returns at once;
// the first resync happens in the background (WaitSynced waits for it). The
// error wraps ErrInvalidName when service cannot be a service name. The
// caller must Close the Watcher.
//
// It reads through the registry's client, and follows the events stream
// through a copy of it (see Close), with the registry's TTL, clock, logger
// and write timeout (the deadline of each read other than the blocking one).
func (r *Registry) Watch(service string, opts ...WatchOption) (*Watcher, error) {
	if err := fleetenv.ValidateService(service); err != nil {
		return nil, fmt.Errorf("%w: service %q: %v", ErrInvalidName, service, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{
		r: r, service: service, block: DefaultWatchBlock, log: r.cfg.log.With("service", service),
		synced: make(chan struct{}), cancel: cancel, done: make(chan struct{}),
		running: map[string]Instance{},
	}
	w.backoff = r.newBackoff("registry: watcher reads", retry.Default, w.log)
	for _, o := range opts {
		if o != nil {
			o.applyWatch(w)
		}
	}
	// A reconnect must surface as an error: the Watcher resyncs after it.
	// Through a client it cannot copy it polls every 100ms.
	w.stream = blockread.NewStream(r.c, EventsKey, blockread.NoRetry, eventLimits, 100*time.Millisecond)
	w.view.Store(&View{Service: service, changed: make(chan struct{})})
	go w.run(ctx)
	return w, nil
}

// Service returns the watched service's name.
func (w *Watcher) Service() string { return w.service }

// View returns the current view: one atomic load, no allocation.
func (w *Watcher) View() *View { return w.view.Load() }

// Running returns the current view's running instances whose entries have
// not expired now, sorted by instance id. It never returns an instance past
// its expiry, even while the Watcher cannot reach Redis. It allocates only
// when it leaves an instance out. Do not modify the slice.
func (w *Watcher) Running() []Instance {
	ins := w.view.Load().Running
	now := w.r.cfg.clock.Now()
	for i, in := range ins {
		if !in.Expires.After(now) {
			return unexpired(ins, i, now)
		}
	}
	return ins
}

// unexpired returns the instances of ins not expired at now; ins[i] is the
// first that is.
func unexpired(ins []Instance, i int, now time.Time) []Instance {
	out := slices.Clone(ins[:i])
	for _, in := range ins[i+1:] {
		if in.Expires.After(now) {
			out = append(out, in)
		}
	}
	return out
}

// WaitSynced waits until the Watcher's first resync succeeded. It returns
// ctx's error if ctx ends first, and ErrWatcherClosed after Close.
func (w *Watcher) WaitSynced(ctx context.Context) error {
	select {
	case <-w.synced:
		return nil
	default:
	}
	select {
	case <-w.synced:
		return nil
	case <-w.done:
		return ErrWatcherClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Next waits for a view newer than v and returns it. It returns ctx's error
// if ctx ends first, and ErrWatcherClosed after Close. Views that replaced
// each other while the caller was busy are skipped: Next returns the latest.
func (w *Watcher) Next(ctx context.Context, v *View) (*View, error) {
	select {
	case <-v.changed:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-w.done:
		return nil, ErrWatcherClosed
	default:
	}
	return w.view.Load(), nil
}

// Close stops the Watcher and waits for its goroutine to exit. A blocked
// XREAD ends at once: the Watcher reads the stream through a client of its
// own, copied from a *redis.Client or a *redis.ClusterClient, and Close
// closes it; with other clients the read ends within the block time
// (WithWatchBlock). A resync in flight ends within the registry's write
// timeout (WithWriteTimeout; the client must honour context deadlines). The
// current view's Changed channel is closed. Close is idempotent; it returns
// nil.
func (w *Watcher) Close() error {
	w.once.Do(func() {
		w.cancel()
		_ = w.stream.Close() // a copy only
		<-w.done
		close(w.view.Load().changed)
	})
	<-w.done
	return nil
}

// run is the Watcher's goroutine: resync, then follow the events stream from
// where the resync read it, resyncing when a resync is due, and after a
// failure, until Close.
func (w *Watcher) run(ctx context.Context) {
	defer close(w.done)
	needSync := true
	var nextSync time.Time
	for ctx.Err() == nil {
		if needSync || !w.r.cfg.clock.Now().Before(nextSync) {
			if err := w.resync(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				w.retry(ctx, err)
				needSync = true
				continue
			}
			needSync = false
			nextSync = w.nextSync()
		}
		block := max(min(w.block, w.r.cfg.clock.Until(nextSync)), 10*time.Millisecond)
		events, err := w.read(ctx, block)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.retry(ctx, err)
			needSync = true
			continue
		}
		if len(events) == 0 {
			continue
		}
		if err := w.apply(ctx, events); err != nil {
			if ctx.Err() != nil {
				return
			}
			// The events are read, their entries are not: a resync covers them.
			w.log.Warn("registry: watcher could not read the entries of new running instances; resyncing", "error", err)
			needSync = true
			continue
		}
		if next := w.nextSync(); next.Before(nextSync) {
			nextSync = next
		}
	}
}

// nextSync is when the next resync is due: one TTL after this one, or
// sooner, a quarter of a TTL before the known expiry of a running instance,
// so that a resync learns of its heartbeats before the view's reads would
// leave it out (a live instance's expiry is at least two thirds of a TTL
// ahead: it heartbeats every third). An instance whose expiry that resync
// did not move has stopped heartbeating: the next resync is at its expiry,
// and drops it. After a resync that kept vanished instances, the next one
// is a heartbeat interval later.
func (w *Watcher) nextSync() time.Time {
	now := w.r.cfg.clock.Now()
	next := now.Add(w.r.cfg.ttl)
	if w.vanished {
		next = now.Add(w.r.HeartbeatInterval())
	}
	for _, in := range w.running {
		at := in.Expires.Add(-w.r.cfg.ttl / 4)
		if !at.After(now) {
			at = in.Expires
		}
		if at.Before(next) {
			next = at
		}
	}
	return next
}

// resync reads a position in the stream (Redis's clock: no event is read),
// then the service's listing, and makes the listing the view: every event
// before that position is reflected in it (an entry is written before its
// event), so the reads resume from it.
func (w *Watcher) resync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, w.r.cfg.writeTimeout)
	defer cancel()
	// Redis's clock, not the last event: that may be anyone's, of any size.
	last, err := blockread.Position(ctx, w.r.c, EventsKey)
	if err != nil {
		return fmt.Errorf("registry: reading the position of %s: %w", EventsKey, w.r.refused(redisacl.Reader, err, "TIME", EventsKey))
	}
	ins, err := w.r.list(ctx, w.service, w.log)
	if err != nil {
		return err
	}
	w.pos = last
	now := w.r.cfg.clock.Now()
	running := make(map[string]Instance, len(ins))
	listed := make(map[string]bool, len(ins))
	for _, in := range ins {
		listed[in.Instance] = true
		if in.Status == StatusRunning {
			running[in.Instance] = in
		}
	}
	// An instance the listing lacks although its entry had not expired
	// vanished (FLUSHALL, a Redis restart, eviction, a DEL): a live instance
	// re-registers at its next heartbeat. It stays until its known expiry,
	// and the next resync comes within a heartbeat interval to see it back.
	w.vanished = false
	for id, in := range w.running {
		if !listed[id] && in.Expires.After(now) {
			running[id] = in
			w.vanished = true
		}
	}
	changed := !w.connected || len(running) != len(w.running)
	for id, in := range running {
		if old, ok := w.running[id]; !ok || !sameInstance(old, in) {
			changed = true
		}
	}
	w.running, w.connected = running, true
	w.backoff.Succeeded(ctx, "running", len(running))
	if changed {
		w.publish()
	}
	select {
	case <-w.synced:
	default:
		close(w.synced)
	}
	return nil
}

// sameInstance reports whether a and b are the same as far as a view goes:
// a heartbeat that moved the expiry along is a change (the view's reads
// leave out instances past their expiry).
func sameInstance(a, b Instance) bool {
	return a.Expires.Equal(b.Expires) && a.Addr == b.Addr && a.Owner == b.Owner && a.Status == b.Status &&
		a.HealthAddr == b.HealthAddr && a.Version == b.Version && a.Degraded == b.Degraded && a.PID == b.PID
}

// read reads the events after pos, blocking up to block for the first.
func (w *Watcher) read(ctx context.Context, block time.Duration) ([]Event, error) {
	// With ContextTimeoutEnabled the deadline bounds a read that a frozen
	// Redis never answers; go-redis's own bound is block + 10s.
	rctx, cancel := context.WithTimeout(ctx, block+w.r.cfg.writeTimeout)
	defer cancel()
	page, err := w.stream.Read(rctx, w.pos, 512, block)
	if err != nil {
		slotmap.Reload(w.stream.Client(), err)
		err = redisacl.Explain(err, redisacl.Reader, redisacl.Call{Cmd: "XREAD", Keys: []string{EventsKey}})
		return nil, fmt.Errorf("registry: reading %s after %s: %w", EventsKey, w.pos, err)
	}
	p := eventPage(page, w.pos)
	w.pos = p.Next
	w.r.skippedEvents(ctx, w.log, p.Skipped)
	var out []Event
	for _, ev := range p.Events {
		if ev.Service == w.service {
			out = append(out, ev)
		}
	}
	return out, nil
}

// apply applies a batch of the service's events: an instance whose last
// event leaves running leaves the view; one whose last event reaches running
// joins it once its entry (one GET and its index score, pipelined for the
// batch) confirms it is running and tells where to call it.
func (w *Watcher) apply(ctx context.Context, events []Event) error {
	last := map[string]string{} // instance -> the state its last event went to
	for _, ev := range events {
		last[ev.Instance] = ev.To
	}
	changed := false
	var fetch []string
	for id, to := range last {
		if to == StatusRunning {
			fetch = append(fetch, id)
			continue
		}
		if _, ok := w.running[id]; ok {
			delete(w.running, id)
			changed = true
		}
	}
	if len(fetch) > 0 {
		got, err := w.fetch(ctx, fetch)
		if err != nil {
			if changed {
				w.publish()
			}
			return err
		}
		for _, id := range fetch {
			in, ok := got[id]
			old, had := w.running[id]
			switch {
			case ok && in.Status == StatusRunning:
				if !had || !sameInstance(old, in) {
					changed = true
				}
				w.running[id] = in
			case had:
				delete(w.running, id)
				changed = true
			}
		}
	}
	if changed {
		w.publish()
	}
	return nil
}

// fetch reads the entries and index scores of ids in one round trip (they
// share the service's slot), an entry's length and at most MaxEntryJSONLen
// bytes of it (readEntries). An instance whose entry or score is missing,
// unreadable or expired is left out; so are, with a warning (at most one a
// minute per key), an id from the stream that cannot be an instance id, an
// entry over MaxEntryJSONLen, unread, and an entry whose JSON names another
// instance than its key (DecodeEntry).
func (w *Watcher) fetch(ctx context.Context, ids []string) (map[string]Instance, error) {
	ids = slices.DeleteFunc(slices.Clone(ids), func(id string) bool {
		if fleetenv.ValidateInstance(id) == nil {
			return false
		}
		w.r.skipped(ctx, w.log, EventsKey+"\x00"+id, "registry: skipping an event to running whose instance cannot be an instance id",
			"key", EventsKey, "instance", short(id))
		return true
	})
	if len(ids) == 0 {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, w.r.cfg.writeTimeout)
	defer cancel()
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = EntryKey(w.service, id)
	}
	got, err := w.r.readEntries(ctx, keys, IndexKey(w.service), ids)
	if err != nil {
		return nil, fmt.Errorf("registry: reading entries of service %q: %w", w.service, err)
	}
	now := w.r.cfg.clock.Now()
	out := make(map[string]Instance, len(ids))
	for i, id := range ids {
		g := got[i]
		if g.size > 0 {
			w.r.skipped(ctx, w.log, keys[i], "registry: skipping an oversized entry unread", "key", keys[i], "bytes", g.size, "max_bytes", MaxEntryJSONLen)
			continue
		}
		if !g.found || !g.scored {
			continue
		}
		e, err := DecodeEntry(w.service, id, []byte(g.raw))
		if err != nil {
			w.r.skipEntry(ctx, w.log, keys[i], err)
			continue
		}
		in := Instance{Entry: e, Expires: time.UnixMilli(int64(g.score))}
		if in.Expires.After(now) {
			out[id] = in
		}
	}
	return out, nil
}

// retry handles a failed read or resync: the view is marked lost (see
// lost); the backoff (retry.Default: 100ms doubling to 5s, full jitter) says
// how long to wait and logs the outage, at warn when it begins, and the
// goroutine sleeps the wait (see sleep). The next successful resync ends the
// outage (resync logs the recovery).
func (w *Watcher) retry(ctx context.Context, err error) {
	w.lost()
	w.sleep(ctx, w.backoff.Failed(ctx, err, "running", len(w.running)))
}

// lost records a failed read or resync: the view is no longer connected,
// and drops the instances whose known expiry has passed; it keeps the
// others until their expiry.
func (w *Watcher) lost() {
	now := w.r.cfg.clock.Now()
	changed := w.connected
	w.connected = false
	for id, in := range w.running {
		if !in.Expires.After(now) {
			delete(w.running, id)
			changed = true
		}
	}
	if changed {
		w.publish()
	}
}

// sleep waits d on the registry's clock (the backoff's Wait), or until ctx
// ends; it wakes early when a running instance's known expiry comes first,
// to drop it.
func (w *Watcher) sleep(ctx context.Context, d time.Duration) {
	now := w.r.cfg.clock.Now()
	for _, in := range w.running {
		if until := in.Expires.Sub(now); until < d {
			d = max(until, time.Millisecond)
		}
	}
	w.backoff.Wait(ctx, d)
}

// publish makes the running set the current view and wakes those waiting on
// the one it replaces.
func (w *Watcher) publish() {
	running := make([]Instance, 0, len(w.running))
	for _, in := range w.running {
		running = append(running, in)
	}
	slices.SortFunc(running, func(a, b Instance) int { return strings.Compare(a.Instance, b.Instance) })
	v := &View{Service: w.service, Running: running, Connected: w.connected, At: w.r.cfg.clock.Now(), changed: make(chan struct{})}
	old := w.view.Swap(v)
	close(old.changed)
}
