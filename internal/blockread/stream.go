package blockread

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Stream reads one Redis stream forward, waiting for new entries, and never
// loads an entry beyond its Limits: see the package documentation. One
// goroutine reads a Stream at a time; Refused, Own and Client may be called
// from any.
type Stream struct {
	key  string
	c    redis.UniversalClient
	own  bool
	lim  Limits
	poll time.Duration

	refused atomic.Int64
}

// NewStream returns a Stream of key read through a guarded copy of rdb
// (NewClient with retries and lim), or, when rdb cannot be copied, through
// rdb itself, polling with Scan every poll instead of blocking. Close it.
func NewStream(rdb redis.UniversalClient, key string, retries Retries, lim Limits, poll time.Duration) *Stream {
	c, own := NewClient(rdb, retries, lim)
	return &Stream{key: key, c: c, own: own, lim: lim, poll: poll}
}

// Client returns the client the Stream reads through: its guarded copy, or
// the caller's client when it could not copy it (Own). Other reads of what
// the stream's writers write may go through it: they are guarded too.
func (s *Stream) Client() redis.UniversalClient { return s.c }

// Own reports whether the Stream reads through a guarded copy of its own
// (blocking reads, ended at once by Close) rather than polling the caller's
// client.
func (s *Stream) Own() bool { return s.own }

// Limits returns the Stream's limits.
func (s *Stream) Limits() Limits { return s.lim }

// Refused returns how many replies the guard has refused so far.
func (s *Stream) Refused() int64 { return s.refused.Load() }

// Close closes the Stream's copy, which ends a blocked read at once. It does
// not close a client the Stream could not copy.
func (s *Stream) Close() error {
	if s.own {
		return s.c.Close()
	}
	return nil
}

// Read returns up to count entries (MaxCount at most) that follow the entry
// id after (a Position, or "0-0" for the first), waiting up to block (> 0)
// for the first one; no entries and no error when none came. Oversized
// entries come in stream order with the others (Entry.Oversized), so the
// caller can report and skip them.
//
// It reads with XREAD BLOCK through the guarded copy. When the guard refuses
// the reply, the connection is closed and the refusal says which entry it was
// reading (the trail): Read returns the entries before it, read again with a
// non-blocking XREAD of as many, and that entry as oversized when it was the
// one too large;
// the next Read starts after it. Redis is asked for no entry's data twice
// but the ones before a refused one. Through a client it could not copy,
// every Read is a Scan (a Lua script), and one that finds nothing waits
// min(block, poll) before it returns.
func (s *Stream) Read(ctx context.Context, after string, count int64, block time.Duration) (Page, error) {
	count = min(max(count, 1), MaxCount)
	if !s.own {
		p, err := Scan(ctx, s.c, s.key, "("+after, "+", count, false, s.lim)
		if err == nil && len(p.Entries) == 0 && block > 0 {
			wait(ctx, min(block, s.poll))
		}
		return p, err
	}
	args := &redis.XReadArgs{Streams: []string{s.key, after}, Count: count, Block: -1}
	if block > 0 {
		args.Block = block
	}
	streams, err := s.c.XRead(ctx, args).Result()
	var tl *TooLargeError
	if errors.As(err, &tl) {
		s.refused.Add(1)
		return s.refusedAt(ctx, tl, xreadEntries(tl.trail), after, false, true)
	}
	if errors.Is(err, redis.Nil) {
		return Page{}, nil
	}
	if err != nil {
		return Page{}, err
	}
	n := 0
	for _, st := range streams {
		n += len(st.Messages)
	}
	p := Page{Entries: make([]Entry, 0, n)}
	for _, st := range streams {
		for _, m := range st.Messages {
			p.Entries = append(p.Entries, sized(m, s.lim))
		}
	}
	return p, nil
}

// xreadEntries returns the index in trail of XREAD's array of entries: the
// value of the stream's key in a RESP3 map, the second element of the
// stream's [key, entries] in RESP2.
func xreadEntries(trail []trailFrame) int {
	if len(trail) > 0 && trail[0].typ == '%' {
		return 1
	}
	return 2
}

// refusedAt turns a refused read of entries that followed from (forward, or
// preceded it with reverse) into the page it stands for: the entries the
// reply completed before the one it was refused in, read again up to that
// one, and that entry, as oversized when the guard refused it for itself
// (one of its fields, or its fields' number, or the reply's budget with no
// entry before it). entries is the index in the trail of the reply's array
// of entries. With after, from is an XREAD position (the entries after it)
// and the entries are read again with XREAD, the one command a reader of new
// entries needs; else from is an XRANGE (XREVRANGE) start.
func (s *Stream) refusedAt(ctx context.Context, tl *TooLargeError, entries int, from string, reverse, after bool) (Page, error) {
	start := from
	if after {
		start = "(" + from
	}
	if entries >= len(tl.trail) {
		return Page{}, fmt.Errorf("%w (not within an entry)", tl)
	}
	before := tl.trail[entries].index // complete entries before the refused one
	if entries+1 >= len(tl.trail) {
		// Refused between two entries: the budget ran out. Read the
		// complete ones again; the next read goes on after them.
		if before == 0 {
			return Page{}, fmt.Errorf("%w (before any entry)", tl)
		}
		return s.rangeBefore(ctx, from, "", before, reverse, after)
	}
	id := tl.trail[entries+1].first
	if !validID(id) || !beyond(id, start, reverse) {
		return Page{}, fmt.Errorf("%w (entry id %q not readable)", tl, id)
	}
	p, err := s.rangeBefore(ctx, from, id, before, reverse, after)
	if err != nil {
		return Page{}, err
	}
	if tl.What == "reply" && before > 0 {
		return p, nil // the entry may fit on its own: the next read starts with it
	}
	e := Entry{ID: id, Oversized: true, Size: tl.Size}
	switch tl.What {
	case "aggregate":
		e.Size, e.Fields = 0, tl.Size/2
		e.Why = fmt.Sprintf("%d fields", e.Fields)
	case "bulk string":
		e.Why = fmt.Sprintf("a field of %d bytes", e.Size)
	default:
		e.Why = fmt.Sprintf("more than %d bytes", e.Size)
	}
	p.Entries = append(p.Entries, e)
	return p, nil
}

// rangeBefore reads the n entries that follow from (precede it with
// reverse), up to id excluded ("" for no bound), through the guarded copy:
// with after, those after the XREAD position from, by a non-blocking XREAD
// (an entry at or beyond id, which only a deletion meanwhile lets in, is left
// for the next read).
func (s *Stream) rangeBefore(ctx context.Context, from, id string, n int64, reverse, after bool) (Page, error) {
	if n == 0 {
		return Page{}, nil
	}
	var msgs []redis.XMessage
	var err error
	if after {
		var streams []redis.XStream
		streams, err = s.c.XRead(ctx, &redis.XReadArgs{Streams: []string{s.key, from}, Count: n, Block: -1}).Result()
		for _, st := range streams {
			for _, m := range st.Messages {
				if id == "" || !beyond(m.ID, id, false) {
					msgs = append(msgs, m)
				}
			}
		}
		if errors.Is(err, redis.Nil) {
			err = nil
		}
	} else if reverse {
		to := "-"
		if id != "" {
			to = "(" + id
		}
		msgs, err = s.c.XRevRangeN(ctx, s.key, from, to, n).Result()
	} else {
		to := "+"
		if id != "" {
			to = "(" + id
		}
		msgs, err = s.c.XRangeN(ctx, s.key, from, to, n).Result()
	}
	if err != nil {
		return Page{}, err
	}
	p := Page{Entries: make([]Entry, 0, len(msgs))}
	for _, m := range msgs {
		p.Entries = append(p.Entries, sized(m, s.lim))
	}
	return p, nil
}

// Range reads up to count entries (MaxCount at most) from from to to,
// XRANGE's start and end, or with reverse XREVRANGE's end and start ("-",
// "+", an id, or "(" and an id to exclude it), through the guarded copy,
// without loading an entry over the Limits: each refused one is skipped
// (returned as oversized) and the range read on after it, one refusal, one
// closed connection and one more read each. Through a client it could not
// copy, Range is a Scan. Once it has read the Limits' Reply bytes of
// entries it stops (Page.More); one reply may hold more, up to the guard's
// budget.
func (s *Stream) Range(ctx context.Context, from, to string, count int64, reverse bool) (Page, error) {
	count = min(max(count, 1), MaxCount)
	if !s.own {
		return Scan(ctx, s.c, s.key, from, to, count, reverse, s.lim)
	}
	var out Page
	var bytes int64
	for int64(len(out.Entries)) < count {
		want := count - int64(len(out.Entries))
		var msgs []redis.XMessage
		var err error
		if reverse {
			msgs, err = s.c.XRevRangeN(ctx, s.key, from, to, want).Result()
		} else {
			msgs, err = s.c.XRangeN(ctx, s.key, from, to, want).Result()
		}
		var tl *TooLargeError
		if errors.As(err, &tl) {
			s.refused.Add(1)
			p, err := s.refusedAt(ctx, tl, 0, from, reverse, false)
			if err != nil {
				return out, err
			}
			out.Entries = append(out.Entries, p.Entries...)
			from = "(" + p.Last()
			for _, e := range p.Entries {
				if !e.Oversized { // what was loaded
					bytes += e.Size
				}
			}
			if bytes >= int64(s.lim.Reply) {
				out.More = int64(len(out.Entries)) < count
				break
			}
			continue
		}
		if err != nil {
			return out, err
		}
		for _, m := range msgs {
			e := sized(m, s.lim)
			out.Entries = append(out.Entries, e)
			bytes += e.Size // loaded, oversized or not: the guard let it through
		}
		if int64(len(msgs)) < want {
			break // the range's end
		}
		if bytes >= int64(s.lim.Reply) {
			out.More = int64(len(out.Entries)) < count
			break
		}
		from = "(" + out.Last()
	}
	return out, nil
}

// Last returns the id of the stream's last entry, "0-0" when it has none,
// without loading the entry when it is oversized: the guard's refusal names
// it. Redis still prepares the entry's reply, once; a reader that needs a
// position often (a Watcher's resyncs) takes Position instead.
func (s *Stream) Last(ctx context.Context) (string, error) {
	p, err := s.Range(ctx, "+", "-", 1, true)
	if err != nil {
		return "", err
	}
	if len(p.Entries) == 0 {
		return "0-0", nil
	}
	return p.Entries[0].ID, nil
}

// Range reads a range of key as Stream.Range does, through a guarded copy of
// rdb made for the call (one connection, closed before Range returns), or
// with Scan through a client it cannot copy.
func Range(ctx context.Context, rdb redis.UniversalClient, key, from, to string, count int64, reverse bool, lim Limits) (Page, error) {
	s := NewStream(rdb, key, Retry, lim, 0)
	defer s.Close()
	return s.Range(ctx, from, to, count, reverse)
}

// timeScript returns Redis's clock on the node that holds KEYS[1].
var timeScript = redis.NewScript(`return redis.call('TIME')`)

// Position returns a position in the stream key from which a read returns
// every entry added after Position returns: the millisecond before Redis's
// clock on the node holding the stream, as the id
// "<ms - 1>-18446744073709551615" (stream ids are that clock in milliseconds,
// or later). Entries added in that same millisecond before the call are read
// too. It reads no entry: the stream's last one may be anyone's, of any size.
// It asks the stream's node (TIME; through a client that is neither a
// *redis.Client nor a *redis.ClusterClient, a read-only script holding the
// key, which routes it).
func Position(ctx context.Context, c redis.UniversalClient, key string) (string, error) {
	var t time.Time
	var err error
	switch x := c.(type) {
	case *redis.Client:
		t, err = x.Time(ctx).Result()
	case *redis.ClusterClient:
		var node *redis.Client
		if node, err = x.MasterForKey(ctx, key); err == nil {
			t, err = node.Time(ctx).Result()
		}
	default:
		var v []int64
		if v, err = RunRO(ctx, c, timeScript, []string{key}).Int64Slice(); err == nil && len(v) == 2 {
			t = time.Unix(v[0], v[1]*1000)
		}
	}
	if err != nil {
		return "", err
	}
	if t.IsZero() {
		return "", fmt.Errorf("%w: TIME", errMalformed)
	}
	return strconv.FormatInt(t.UnixMilli()-1, 10) + "-18446744073709551615", nil
}

// validID reports whether id is a stream id "ms-seq".
func validID(id string) bool {
	_, _, err := parseID(id)
	return err == nil && strings.Contains(id, "-")
}

func parseID(id string) (ms, seq uint64, err error) {
	a, b, _ := strings.Cut(id, "-")
	if ms, err = strconv.ParseUint(a, 10, 64); err != nil {
		return 0, 0, err
	}
	if b != "" {
		seq, err = strconv.ParseUint(b, 10, 64)
	}
	return ms, seq, err
}

// beyond reports whether a read that starts at from ("-", "+", an id, or
// "(" and an id to exclude it) can return id: id comes after from (before it
// with reverse). A refused reply's entry that does not is no entry of the
// read, and the reader must not move back to it.
func beyond(id, from string, reverse bool) bool {
	exclusive := strings.HasPrefix(from, "(")
	from = strings.TrimPrefix(from, "(")
	switch from {
	case "-":
		return !reverse
	case "+":
		return reverse
	}
	im, is, err1 := parseID(id)
	fm, fs, err2 := parseID(from)
	if err1 != nil || err2 != nil {
		return false
	}
	c := cmp(im, fm)
	if c == 0 {
		c = cmp(is, fs)
	}
	if reverse {
		c = -c
	}
	return c > 0 || c == 0 && !exclusive
}

func cmp(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// wait waits d or until ctx ends.
func wait(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
