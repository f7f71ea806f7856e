package registry

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/internal/redisacl"
)

// DefaultEventsCount is the batch size of Events when count <= 0.
const DefaultEventsCount = 100

// Event is one lifecycle transition, as an entry of the EventsKey stream.
// In the stream its fields are service, instance, event, from, to, phase,
// degraded ("true"/"false"), time (RFC 3339 nanoseconds, UTC) and, when
// not empty, guard, error and trace_id.
type Event struct {
	// ID is the stream entry id, set when the event was read from Redis.
	ID       string
	Service  string
	Instance string
	Event    string // the event name, e.g. "ping_failed"
	From, To string // state names
	Guard    string // the guard that chose this transition, if any
	Phase    string // the destination's phase label, if any
	Degraded bool
	Time     time.Time
	Error    string // the error that caused the transition, if any
	TraceID  string // W3C trace id of the transition's span, if any
}

// normalizeEvent sets a zero Time to now and moves it to UTC.
func (r *Registry) normalizeEvent(ev Event) Event {
	if ev.Time.IsZero() {
		ev.Time = r.cfg.clock.Now()
	}
	ev.Time = ev.Time.UTC()
	return ev
}

// xaddArgs returns the XADD of ev to the capped events stream.
func (r *Registry) xaddArgs(ev Event) *redis.XAddArgs {
	v := make([]any, 0, 22)
	v = append(v,
		"service", ev.Service,
		"instance", ev.Instance,
		"event", ev.Event,
		"from", ev.From,
		"to", ev.To,
		"phase", ev.Phase,
		"degraded", strconv.FormatBool(ev.Degraded),
		"time", ev.Time.Format(time.RFC3339Nano),
	)
	// Optional fields are left out when empty: the stream is fleet-wide and
	// capped by count, so smaller entries keep more history in the same memory.
	for _, f := range [...]struct{ k, v string }{{"guard", ev.Guard}, {"error", ev.Error}, {"trace_id", ev.TraceID}} {
		if f.v != "" {
			v = append(v, f.k, f.v)
		}
	}
	return &redis.XAddArgs{Stream: EventsKey, MaxLen: r.cfg.eventsMaxLen, Approx: true, Values: v}
}

// Publish appends ev to the events stream now (one XADD, MAXLEN ~ capped)
// and returns its stream id. A zero ev.Time is set to now. A field longer
// than MaxErrorLen (Error) or MaxValueLen (the others) is an error wrapping
// ErrTooLong that names it. Instances
// normally publish through Member.Update, which never blocks; Publish is for
// tools and tests.
func (r *Registry) Publish(ctx context.Context, ev Event) (string, error) {
	if err := ValidateNames(ev.Service, ev.Instance); err != nil {
		return "", err
	}
	if err := check("event", eventFields(&ev)); err != nil {
		return "", err
	}
	id, err := r.c.XAdd(ctx, r.xaddArgs(r.normalizeEvent(ev))).Result()
	if err != nil {
		return "", fmt.Errorf("registry: appending event %q of %s/%s to %s: %w", ev.Event, ev.Service, ev.Instance, EventsKey, r.refused(redisacl.Instance, err, "XADD", EventsKey))
	}
	return id, nil
}

// Events reads up to count events (DefaultEventsCount when count <= 0) that
// come after lastID in the events stream, oldest first, and returns them
// with the id to pass as lastID next time, so that successive calls miss
// nothing and repeat nothing.
//
// lastID "" or "0" reads from the beginning of the (capped) stream; "$" reads
// only events appended after the call: it is resolved to the current last id
// first, and that id is returned when nothing new arrived. With block > 0
// Events waits up to block for the first new event and returns no events and
// no error when none arrived; with block <= 0 it does not wait.
//
// An entry over MaxEventLen or MaxEventFields is left out unread, and logged
// at warn (at most a line a minute); a page ends with such an entry, and
// next is after it. Events reads through a guarded connection made for the
// call (EventRange without block, an EventReader with block), closed when
// Events returns or ctx ends, which ends a blocked read at once. A loop of
// reads is cheaper with one EventReader, which also says what it left out.
func (r *Registry) Events(ctx context.Context, lastID string, count int64, block time.Duration) (events []Event, next string, err error) {
	if count <= 0 {
		count = DefaultEventsCount
	}
	var p EventPage
	if block > 0 {
		er := r.EventReader()
		defer er.Close()
		stop := context.AfterFunc(ctx, func() { _ = er.Close() })
		defer stop()
		p, err = er.Read(ctx, lastID, count, block)
	} else {
		switch lastID {
		case "", "0":
			lastID = "0-0"
		case "$":
			last, err := r.EventRange(ctx, "+", "-", 1, true)
			if err != nil {
				return nil, "$", err
			}
			lastID = "0-0"
			if last.First != "" {
				lastID = last.First
			}
		}
		p, err = r.EventRange(ctx, "("+lastID, "+", count, false)
		if p.Next == "" {
			p.Next = lastID
		}
	}
	if err != nil {
		return nil, p.Next, err
	}
	r.skippedEvents(ctx, r.cfg.log, p.Skipped)
	return p.Events, p.Next, nil
}

// decodeEvent reads a stream entry written by xaddArgs; missing or
// malformed fields are left zero rather than failing a whole watch.
func decodeEvent(m redis.XMessage) Event {
	str := func(k string) string {
		s, _ := m.Values[k].(string)
		return s
	}
	ev := Event{
		ID:       m.ID,
		Service:  str("service"),
		Instance: str("instance"),
		Event:    str("event"),
		From:     str("from"),
		To:       str("to"),
		Guard:    str("guard"),
		Phase:    str("phase"),
		Error:    str("error"),
		TraceID:  str("trace_id"),
	}
	ev.Degraded, _ = strconv.ParseBool(str("degraded"))
	ev.Time, _ = time.Parse(time.RFC3339Nano, str("time"))
	return ev
}
