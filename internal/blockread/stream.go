package blockread

import (
	"context"
	"errors"
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

	scan    bool // the guard refused a reply: read with Scan until caught up
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
// id after ("0-0" for the first), waiting up to block (> 0) for the first
// one; no entries and no error when none came. Oversized entries are
// returned as Scan returns them (Entry.Oversized, their short fields only),
// in stream order with the others, so the caller can report and skip them.
//
// It reads with XREAD BLOCK through the guarded copy. When the guard refuses
// the reply, the connection is closed and Read returns what Scan reads from
// the same position instead; later Reads go on with Scan, without blocking,
// until one returns less than a full page, then block again. Through a
// client it could not copy, every Read is a Scan, and one that finds nothing
// waits min(block, poll) before it returns.
func (s *Stream) Read(ctx context.Context, after string, count int64, block time.Duration) (Page, error) {
	count = min(max(count, 1), MaxCount)
	if s.scan || !s.own {
		p, err := s.scanAfter(ctx, after, count)
		if err != nil || len(p.Entries) > 0 || !s.own {
			if err == nil && len(p.Entries) == 0 && block > 0 {
				wait(ctx, min(block, s.poll))
			}
			return p, err
		}
	}
	args := &redis.XReadArgs{Streams: []string{s.key, after}, Count: count, Block: -1}
	if block > 0 {
		args.Block = block
	}
	streams, err := s.c.XRead(ctx, args).Result()
	if errors.Is(err, ErrTooLarge) {
		s.refused.Add(1)
		s.scan = true
		return s.scanAfter(ctx, after, count)
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

// scanAfter is one Scan after after; it leaves the Scan mode once a page
// was not full.
func (s *Stream) scanAfter(ctx context.Context, after string, count int64) (Page, error) {
	p, err := Scan(ctx, s.c, s.key, "("+after, "+", count, false, s.lim)
	if err == nil && !p.More && int64(len(p.Entries)) < count {
		s.scan = false
	}
	return p, err
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
