package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/cmd/sgctl/internal/visible"
	"github.com/stargazer/lifecycle/internal/blockread"
	"github.com/stargazer/lifecycle/internal/ratelog"
	"github.com/stargazer/lifecycle/internal/retry"
	"github.com/stargazer/lifecycle/registry"
)

// Sizes of the fan-out.
const (
	// ringSize transitions are kept in memory, so a browser that reconnects
	// resumes from them without a Redis read.
	ringSize = 2048
	// subBuffer messages may wait for one browser; a browser further
	// behind is disconnected, and resumes from the ring when it reconnects.
	subBuffer = 512
)

// eventView is one transition as the pages and app.js read it.
type eventView struct {
	ID       string    `json:"id"`
	Service  string    `json:"service"`
	Instance string    `json:"instance"`
	Event    string    `json:"event"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Guard    string    `json:"guard,omitempty"`
	Phase    string    `json:"phase,omitempty"`
	Degraded bool      `json:"degraded"`
	Error    string    `json:"error,omitempty"`
	Time     time.Time `json:"time"`
	Group    string    `json:"group"` // To's group
}

// message is one server-sent event: a transition and the instance's entry
// read just after it (nil: the entry is gone, e.g. deregistered).
type message struct {
	id   string
	data []byte
}

type update struct {
	Event eventView `json:"event"`
	Entry *instance `json:"entry"`
}

// hub is the one reader of sg:events in a dashboard process and its fan-out
// to every connected browser.
type hub struct {
	s *Server

	mu    sync.Mutex
	subs  map[*sub]struct{}
	ring  []message // the latest transitions read, oldest first
	from  string    // every transition after this id and up to last is in ring
	last  string    // the id of the last transition read
	ready bool      // from is known
	done  chan struct{}

	bloated *ratelog.Logger // warns of the oversized entries the events name
}

type sub struct {
	ch chan message // closed when the hub drops the browser
}

func newHub(s *Server) *hub {
	return &hub{s: s, subs: map[*sub]struct{}{}, done: make(chan struct{}),
		bloated: ratelog.New(s.cfg.Logger, nil, ratelog.DefaultInterval)}
}

// run is the reader: one blocking XREAD at a time, from the stream's end
// when it starts, through a registry.EventReader: a connection of its own,
// closed when ctx ends (which ends a blocked read at once), on which an
// entry of any size that anyone appended is never loaded: it is left out,
// with a warning (at most one line a minute).
func (h *hub) run(ctx context.Context) error {
	defer func() {
		h.mu.Lock()
		for sb := range h.subs {
			close(sb.ch)
			delete(h.subs, sb)
		}
		h.mu.Unlock()
		close(h.done)
	}()
	er := h.s.reg.EventReader()
	defer er.Close()
	stop := context.AfterFunc(ctx, func() { _ = er.Close() })
	defer stop()
	skipped := ratelog.New(h.s.cfg.Logger, h.s.clock, ratelog.DefaultInterval)
	b := retry.New("dashboard: events stream reads", retry.Default, retry.WithClock(h.s.clock),
		retry.WithRand(h.s.rand), retry.WithLogger(h.s.cfg.Logger))
	last := "$"
	for ctx.Err() == nil {
		block := h.s.cfg.Block
		if last == "$" {
			block = 0 // resolve the end of the stream now
		}
		p, err := er.Read(ctx, last, 256, block)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			b.Retry(ctx, err, "key", registry.EventsKey)
			continue
		}
		b.Succeeded(ctx, "key", registry.EventsKey, "after", p.Next)
		for _, sk := range p.Skipped {
			skipped.Log(ctx, slog.LevelWarn, "dashboard: oversized event skipped unread", "key", registry.EventsKey, "entry", sk.ID,
				"size", sk.Why, "max_bytes", registry.MaxEventLen, "max_fields", registry.MaxEventFields)
		}
		if last == "$" {
			h.mu.Lock()
			h.from, h.last, h.ready = p.Next, p.Next, true
			h.mu.Unlock()
		}
		last = p.Next
		if len(p.Events) > 0 {
			h.publish(h.s.messages(ctx, p.Events))
		}
	}
	return nil
}

// publish appends msgs to the ring and hands them to every browser; a
// browser whose buffer is full is dropped.
func (h *hub) publish(msgs []message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range msgs {
		h.ring = append(h.ring, m)
		h.last = m.id
	}
	if over := len(h.ring) - ringSize; over > 0 {
		h.from = h.ring[over-1].id
		h.ring = append([]message(nil), h.ring[over:]...)
	}
	for sb := range h.subs {
		for _, m := range msgs {
			select {
			case sb.ch <- m:
				continue
			default:
			}
			close(sb.ch)
			delete(h.subs, sb)
			break
		}
	}
}

func (h *hub) subscribe() *sub {
	sb := &sub{ch: make(chan message, subBuffer)}
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.done:
		close(sb.ch)
	default:
		h.subs[sb] = struct{}{}
	}
	return sb
}

func (h *hub) unsubscribe(sb *sub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[sb]; ok {
		delete(h.subs, sb)
		close(sb.ch)
	}
}

// subscribers is how many browsers are connected.
func (h *hub) subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// since returns what a browser that saw after has missed: from the ring
// when it covers after, else from the stream (one XRANGE), and reset when
// more was missed than a browser should replay (it then reloads).
func (h *hub) since(ctx context.Context, after string) (msgs []message, reset bool) {
	h.mu.Lock()
	ready, from := h.ready, h.from
	ring := append([]message(nil), h.ring...)
	h.mu.Unlock()
	if after == "" || !ready {
		return nil, false
	}
	if cmpID(after, from) >= 0 {
		for _, m := range ring {
			if cmpID(m.id, after) > 0 {
				msgs = append(msgs, m)
			}
		}
		return msgs, false
	}
	// Older than the ring: the stream may still have it (it is capped). A
	// bounded read, which leaves out (unread) entries over an event's size.
	p, err := h.s.reg.EventRange(ctx, "("+after, from, ringSize, false)
	if err != nil || p.More || len(p.Events)+len(p.Skipped) == ringSize {
		return nil, true
	}
	msgs = h.s.messages(ctx, p.Events)
	// The ring may start at or before from: the first read, which resolves
	// the end of the stream, can return events that came in meanwhile, and
	// from is then the last of them. The range above has those already.
	for _, m := range ring {
		if cmpID(m.id, from) > 0 {
			msgs = append(msgs, m)
		}
	}
	return msgs, false
}

// serve is GET /events: a text/event-stream of transitions ("transition"
// events, id = the stream id), resuming after Last-Event-ID (sent by the
// browser when it reconnects) or ?after= (the id the page was rendered at).
// An "reset" event tells the page it missed too much and must reload.
func (h *hub) serve(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	after := r.Header.Get("Last-Event-ID")
	if after == "" {
		after = r.URL.Query().Get("after")
	}
	if !validID(after) {
		after = ""
	}
	sb := h.subscribe() // before reading the backlog: nothing falls between
	defer h.unsubscribe(sb)
	backlog, reset := h.since(r.Context(), after)

	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	var b strings.Builder
	b.WriteString("retry: 1000\n\n")
	if reset {
		b.WriteString("event: reset\ndata: {}\n\n")
	}
	sent := after
	for _, m := range backlog {
		writeMessage(&b, m)
		sent = m.id
	}
	if _, err := w.Write([]byte(b.String())); err != nil || rc.Flush() != nil {
		return
	}
	tick := time.NewTicker(h.s.cfg.Limits.KeepAlive)
	defer tick.Stop()
	for {
		var chunk string
		select {
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		case <-tick.C:
			chunk = ": keep-alive\n\n"
		case m, ok := <-sb.ch:
			if !ok {
				return // dropped: too slow, or the hub stopped
			}
			if sent != "" && cmpID(m.id, sent) <= 0 {
				continue // already in the backlog
			}
			b.Reset()
			writeMessage(&b, m)
			// Drain what is already queued into the same write.
			for more := true; more; {
				select {
				case m2, ok := <-sb.ch:
					if !ok {
						more = false
						break
					}
					writeMessage(&b, m2)
				default:
					more = false
				}
			}
			chunk = b.String()
			sent = m.id
		}
		if _, err := w.Write([]byte(chunk)); err != nil || rc.Flush() != nil {
			return
		}
	}
}

func writeMessage(b *strings.Builder, m message) {
	b.WriteString("event: transition\nid: ")
	b.WriteString(m.id)
	b.WriteString("\ndata: ")
	b.Write(m.data) // JSON from encoding/json: one line
	b.WriteString("\n\n")
}

// messages turns events into messages, with each instance's entry read in
// one pipelined round trip (GET of the entry, ZSCORE of its heartbeat).
// Names come from keys (package registry): an event whose service or
// instance cannot be a name was not written by an instance, and is left
// out (named in a warning at most once a minute); an entry that is not its
// key's (registry.DecodeEntry) is sent as none, as the listing skips it.
func (s *Server) messages(ctx context.Context, events []registry.Event) []message {
	type key struct{ service, instance string }
	entries := map[key]*instance{}
	var keys []key
	events = s.namedEvents(ctx, events)
	for _, ev := range events {
		k := key{ev.Service, ev.Instance}
		if _, ok := entries[k]; !ok {
			entries[k] = nil
			keys = append(keys, k)
		}
	}
	if len(keys) > 0 {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		// An entry is read as a range of at most MaxEntryJSONLen bytes beside
		// its length: one someone bloated is never loaded (and a prefix of it
		// is no entry).
		pipe := s.cfg.Redis.Pipeline()
		lens := make([]*redis.IntCmd, len(keys))
		gets := make([]*redis.StringCmd, len(keys))
		scores := make([]*redis.FloatCmd, len(keys))
		for i, k := range keys {
			lens[i] = pipe.StrLen(rctx, registry.EntryKey(k.service, k.instance))
			gets[i] = pipe.GetRange(rctx, registry.EntryKey(k.service, k.instance), 0, registry.MaxEntryJSONLen-1)
			scores[i] = pipe.ZScore(rctx, registry.IndexKey(k.service), k.instance)
		}
		_, _ = pipe.Exec(rctx) // per-command errors below; a failure leaves entries unknown
		cancel()
		now := s.cfg.Now()
		for i, k := range keys {
			raw, found, size := blockread.Prefix(gets[i], lens[i], registry.MaxEntryJSONLen)
			if size > 0 {
				s.hub.bloated.Log(ctx, slog.LevelWarn, "dashboard: oversized entry skipped unread",
					"key", registry.EntryKey(k.service, k.instance), "bytes", size, "max_bytes", registry.MaxEntryJSONLen)
				continue
			}
			if !found {
				continue
			}
			e, err := registry.DecodeEntry(k.service, k.instance, []byte(raw))
			if err != nil {
				continue
			}
			li := registry.Instance{Entry: e}
			if sc, err := scores[i].Result(); err == nil {
				li.Expires = time.UnixMilli(int64(sc))
			}
			in := s.instances(now, []registry.Instance{li})[0]
			entries[k] = &in
		}
	}
	out := make([]message, 0, len(events))
	for _, ev := range events {
		u := update{Event: s.eventView(ev), Entry: entries[key{ev.Service, ev.Instance}]}
		b, err := json.Marshal(u)
		if err != nil {
			continue
		}
		out = append(out, message{id: ev.ID, data: visible.JSON(b)})
	}
	return out
}

// namedEvents returns the events whose service and instance are names,
// warning (at most once a minute) about the others.
func (s *Server) namedEvents(ctx context.Context, events []registry.Event) []registry.Event {
	return slices.DeleteFunc(slices.Clone(events), func(ev registry.Event) bool {
		if registry.ValidateNames(ev.Service, ev.Instance) == nil {
			return false
		}
		s.skips.Log(ctx, slog.LevelWarn, "dashboard: skipping an event whose service or instance cannot be a name",
			"key", registry.EventsKey, "id", ev.ID, "service", visible.Cell(ev.Service), "instance", visible.Cell(ev.Instance))
		return true
	})
}

// eventView is ev as the pages show it, its fields cut as sgctl watch's
// columns (a cell; the error four).
func (s *Server) eventView(ev registry.Event) eventView {
	c := func(v string) string { return visible.Truncate(v, maxCell) }
	return eventView{ID: ev.ID, Service: c(ev.Service), Instance: c(ev.Instance), Event: c(ev.Event), From: c(ev.From), To: c(ev.To),
		Guard: c(ev.Guard), Phase: c(ev.Phase), Degraded: ev.Degraded, Error: visible.Truncate(ev.Error, maxError), Time: ev.Time, Group: s.group(ev.To)}
}

// recentEvents returns the stream's last id and up to n latest transitions
// (of the services named, when names is not nil), newest first.
func (s *Server) recentEvents(ctx context.Context, names []string, n int) (string, []eventView, error) {
	// Some of the latest may be other services': read more than n. A
	// bounded read, which leaves out (unread) entries over an event's size.
	p, err := s.reg.EventRange(ctx, "+", "-", int64(max(1, n*5)), true)
	if err != nil {
		return "", nil, fmt.Errorf("reading %s: %w", registry.EventsKey, err)
	}
	last := "0-0"
	if p.First != "" {
		last = p.First
	}
	var out []eventView
	for _, ev := range p.Events {
		if names != nil && ev.Service != names[0] || len(s.namedEvents(ctx, []registry.Event{ev})) == 0 {
			continue
		}
		if len(out) == n {
			break
		}
		out = append(out, s.eventView(ev))
	}
	return last, out, nil
}

// validID accepts a stream id "ms-seq" (or "ms").
func validID(id string) bool {
	_, _, err := parseID(id)
	return err == nil
}

func parseID(id string) (ms, seq uint64, err error) {
	a, b, hasSeq := strings.Cut(id, "-")
	if ms, err = strconv.ParseUint(a, 10, 64); err != nil {
		return 0, 0, err
	}
	if hasSeq {
		if seq, err = strconv.ParseUint(b, 10, 64); err != nil {
			return 0, 0, err
		}
	}
	return ms, seq, nil
}

// cmpID compares two stream ids; an invalid id sorts first.
func cmpID(a, b string) int {
	am, as, aerr := parseID(a)
	bm, bs, berr := parseID(b)
	switch {
	case aerr != nil || berr != nil:
		return cmpBool(aerr == nil, berr == nil)
	case am != bm:
		return cmpU(am, bm)
	}
	return cmpU(as, bs)
}

func cmpU(a, b uint64) int {
	if a < b {
		return -1
	}
	if a > b {
		return 1
	}
	return 0
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}
