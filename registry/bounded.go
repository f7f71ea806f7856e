package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/blockread"
	"github.com/stargazer/lifecycle/internal/redisacl"
	"github.com/stargazer/lifecycle/internal/textcut"
)

// Limits of what the registry writes, and of what its readers of sg:events
// load (see "Entries of any size" in the package documentation).
const (
	// MaxErrorLen bounds Entry.Error and Event.Error, in bytes.
	MaxErrorLen = 4 << 10
	// MaxValueLen bounds every other string field of an Entry or an Event
	// (the names have their own rules, ValidateNames), in bytes.
	MaxValueLen = 256
	// MaxEventLen bounds one entry of sg:events, its field names and values
	// summed, in bytes; MaxEventFields its fields. The registry writes none
	// larger; its readers leave a larger one out, unread.
	MaxEventLen    = 8 << 10
	MaxEventFields = 32
)

// ErrTooLong: an entry or event field is longer than the registry writes
// (MaxErrorLen, MaxValueLen). The error names the field and the limit.
var ErrTooLong = errors.New("registry: field too long")

// eventLimits bound what a reader loads of sg:events.
var eventLimits = blockread.Limits{Entry: MaxEventLen, Fields: MaxEventFields, Reply: 1 << 20}

// field is one bounded string field of an Entry or an Event.
type field struct {
	name string
	v    *string
	max  int
}

func entryFields(e *Entry) []field {
	return []field{{"error", &e.Error, MaxErrorLen}, {"status", &e.Status, MaxValueLen}, {"phase", &e.Phase, MaxValueLen},
		{"host", &e.Host, MaxValueLen}, {"version", &e.Version, MaxValueLen}, {"health_addr", &e.HealthAddr, MaxValueLen},
		{"addr", &e.Addr, MaxValueLen}, {"owner", &e.Owner, MaxValueLen}, {"control", &e.Control, MaxValueLen}}
}

func eventFields(ev *Event) []field {
	return []field{{"error", &ev.Error, MaxErrorLen}, {"event", &ev.Event, MaxValueLen}, {"from", &ev.From, MaxValueLen},
		{"to", &ev.To, MaxValueLen}, {"guard", &ev.Guard, MaxValueLen}, {"phase", &ev.Phase, MaxValueLen},
		{"trace_id", &ev.TraceID, MaxValueLen}}
}

// check returns an error wrapping ErrTooLong naming the first field of fs
// over its limit.
func check(what string, fs []field) error {
	for _, f := range fs {
		if len(*f.v) > f.max {
			return fmt.Errorf("%w: %s field %q is %d bytes: want at most %d", ErrTooLong, what, f.name, len(*f.v), f.max)
		}
	}
	return nil
}

// cut cuts every field of fs to its limit, at a character boundary, ending
// a cut one with "…": for the writes that cannot fail (Member.Update).
func cut(fs []field) {
	for _, f := range fs {
		*f.v = textcut.Bytes(*f.v, f.max)
	}
}

// SkippedEvent is an entry of sg:events a read left out unread: it held
// more than MaxEventLen bytes or MaxEventFields fields.
type SkippedEvent struct {
	ID string
	// Bytes and Fields are the entry's size as far as the read learnt it
	// (blockread.Entry: an entry a guard refused may be larger), and Why
	// says it for a message ("a field of 104857600 bytes").
	Bytes, Fields int64
	Why           string
	// Service and Instance are what the entry says, when those fields are
	// short (blockread.ShortValue); unchecked.
	Service, Instance string
}

// EventPage is what one bounded read of sg:events returned.
type EventPage struct {
	// Events are the events read, in the order read.
	Events []Event
	// Skipped are the entries left out unread, in the order read.
	Skipped []SkippedEvent
	// First is the id of the first entry read or skipped ("" when none);
	// Next the id of the last one: where the next read resumes (the read's
	// own start when it found nothing).
	First, Next string
	// More says a range read stopped at its byte budget before its count and
	// the range's end.
	More bool
}

func eventPage(p blockread.Page, start string) EventPage {
	out := EventPage{Next: start, More: p.More}
	if len(p.Entries) > 0 {
		out.First = p.Entries[0].ID
	}
	for _, e := range p.Entries {
		out.Next = e.ID
		if e.Oversized {
			s, _ := e.Values["service"].(string)
			i, _ := e.Values["instance"].(string)
			out.Skipped = append(out.Skipped, SkippedEvent{ID: e.ID, Bytes: e.Size, Fields: e.Fields, Why: e.Why, Service: s, Instance: i})
			continue
		}
		out.Events = append(out.Events, decodeEvent(redis.XMessage{ID: e.ID, Values: e.Values}))
	}
	return out
}

// skippedEvents logs the skipped entries at warn to log: all of them share
// one budget of a line a minute (skipped).
func (r *Registry) skippedEvents(ctx context.Context, log *slog.Logger, skipped []SkippedEvent) {
	for _, s := range skipped {
		r.skipped(ctx, log, EventsKey+"\x00oversized", "registry: oversized event skipped unread", "key", EventsKey, "entry", s.ID,
			"size", s.Why, "max_bytes", MaxEventLen, "max_fields", MaxEventFields)
	}
}

// EventRange reads up to count entries of sg:events (blockread.MaxCount at
// most) from from to to: XRANGE's start and end, or with reverse XREVRANGE's
// end and start ("-", "+", an id, or "(" and an id to exclude it). It never
// loads an entry over MaxEventLen or MaxEventFields (see "Entries of any
// size"): it reads through a guarded copy of the registry's client made for
// the call (one connection), skipping each such entry (EventPage.Skipped)
// and reading on after it. A page stops once it holds about a megabyte of
// events (EventPage.More).
func (r *Registry) EventRange(ctx context.Context, from, to string, count int64, reverse bool) (EventPage, error) {
	p, err := blockread.Range(ctx, r.c, EventsKey, from, to, count, reverse, eventLimits)
	if err != nil {
		return EventPage{}, fmt.Errorf("registry: reading %s from %q to %q: %w", EventsKey, from, to, r.refused(redisacl.Reader, err, "XRANGE", EventsKey))
	}
	return eventPage(p, ""), nil
}

// EventReader follows sg:events with blocking reads that never load an
// entry over MaxEventLen or MaxEventFields (see "Entries of any size" in the
// package documentation), through a client of its own: Close it, which ends
// a blocked read at once. One goroutine reads it at a time.
type EventReader struct {
	r *Registry
	s *blockread.Stream
}

// EventReader returns a reader of sg:events through a guarded copy of the
// registry's client (a *redis.Client or a *redis.ClusterClient; any other
// client is read by polling every 100ms instead of blocking). It touches no
// network.
func (r *Registry) EventReader() *EventReader {
	return &EventReader{r: r, s: blockread.NewStream(r.c, EventsKey, blockread.Retry, eventLimits, 100*time.Millisecond)}
}

// Read returns up to count events (DefaultEventsCount when count <= 0) that
// come after after in sg:events, oldest first, with the entries it left out
// (Skipped) and the id to pass as after next time (Next). after "" or "0"
// reads from the beginning of the (capped) stream; "$" only what is appended
// after the call (it is resolved to the last id first, which is read without
// the entry). With block > 0 Read waits up to block for the first entry.
func (er *EventReader) Read(ctx context.Context, after string, count int64, block time.Duration) (EventPage, error) {
	if count <= 0 {
		count = DefaultEventsCount
	}
	switch after {
	case "", "0":
		after = "0-0"
	case "$":
		last, err := er.s.Last(ctx)
		if err != nil {
			return EventPage{Next: "$"}, fmt.Errorf("registry: reading the last id of %s: %w", EventsKey, er.r.refused(redisacl.Reader, err, "XREVRANGE", EventsKey))
		}
		after = last
	}
	p, err := er.s.Read(ctx, after, count, block)
	if err != nil {
		return EventPage{Next: after}, fmt.Errorf("registry: reading %s after %q: %w", EventsKey, after, er.r.refused(redisacl.Reader, err, "XREAD", EventsKey))
	}
	return eventPage(p, after), nil
}

// Close closes the reader's client: a blocked Read returns at once, with an
// error.
func (er *EventReader) Close() error { return er.s.Close() }
