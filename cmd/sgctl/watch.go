package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/stargazer/lifecycle/internal/ratelog"
	"github.com/stargazer/lifecycle/internal/retry"
	"github.com/stargazer/lifecycle/registry"
)

// watchBlock is how long one blocking read of the events stream waits. A
// cancelled watch does not wait for it: the reader's client is closed, which
// ends the read at once.
const watchBlock = 5 * time.Second

var watchCommand = &command{
	name:    "watch",
	summary: "Follow lifecycle transitions as they happen",
	usage:   "watch [SERVICE] [--instance ID] [--json] [--from ID]",
	help: `Follows the fleet-wide events stream (sg:events) with blocking reads and prints
one line per transition, oldest first:

  TIME SERVICE INSTANCE FROM -> TO EVENT GUARD PHASE ERROR

TIME is when the instance made the transition (UTC); GUARD is the guard that
chose the transition, PHASE the destination's phase label, "-" when none.
With SERVICE (and --instance) only that service's (instance's) transitions
are shown. By default only transitions made after the command started are
shown; --from 0 replays the whole capped stream first, --from ID starts
after a stream id (the "id" field of --json output), to resume a watch.

With --json each transition is one JSON object per line (NDJSON).

A transition whose service or instance cannot be a name was not written by
an instance: it is skipped, with a warning on stderr (at most one a minute).

An entry of the stream larger than the lifecycle writes (8 KiB), which anyone
who can write to Redis can append, is never loaded: a warning line on stderr
names it and says what was too large.

If Redis stops answering after the watch started, sgctl says so on stderr
and keeps retrying from the last transition it printed, so nothing still in
the stream is missed or repeated. Ctrl-C ends the watch with exit code 0.`,
	flags: func(fs *flag.FlagSet, a *app) func(context.Context, []string) int {
		asJSON := fs.Bool("json", false, "print one JSON object per line")
		instance := fs.String("instance", "", "only this instance `ID` (needs SERVICE)")
		from := fs.String("from", "$", "start after this stream `ID`: $ for new transitions only, 0 for the whole stream")
		return func(ctx context.Context, args []string) int {
			return a.watch(ctx, args, *instance, *from, *asJSON)
		}
	},
}

// watchEvent is one transition as `watch --json` prints it.
type watchEvent struct {
	ID       string    `json:"id"`
	Time     time.Time `json:"time"`
	Service  string    `json:"service"`
	Instance string    `json:"instance"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Event    string    `json:"event"`
	Guard    string    `json:"guard,omitempty"`
	Phase    string    `json:"phase,omitempty"`
	Degraded bool      `json:"degraded"`
	Error    string    `json:"error,omitempty"`
	TraceID  string    `json:"trace_id,omitempty"`
}

func (a *app) watch(ctx context.Context, args []string, instance, from string, asJSON bool) int {
	if len(args) > 1 {
		return a.usageError("too many arguments %q: want at most one SERVICE", args)
	}
	service := ""
	if len(args) == 1 {
		if err := validService(args[0]); err != nil {
			return a.usageError("%v", err)
		}
		service = args[0]
	}
	if instance != "" && service == "" {
		return a.usageError("flag --instance %q needs a SERVICE argument", instance)
	}
	if !validStreamID(from) {
		return a.usageError("invalid value %q for flag --from: want $, 0 or a stream id such as 1700000000000-0", from)
	}
	cn, code := a.connect(ctx)
	if cn == nil {
		return code
	}
	defer cn.Close()
	// A read blocked in XREAD does not watch ctx: closing the client ends it,
	// so Ctrl-C is immediate rather than up to watchBlock late.
	stop := context.AfterFunc(ctx, func() { _ = cn.Close() })
	defer stop()

	reg := registry.New(cn.client, registry.WithLogger(a.warner()))
	// Bounded reads on a connection of the watch's own: an entry anyone
	// appended, of any size, is never loaded (it is reported instead).
	er := reg.EventReader()
	defer er.Close()
	stopReader := context.AfterFunc(ctx, func() { _ = er.Close() })
	defer stopReader()
	p := &eventPrinter{w: a.stdout, json: asJSON}
	// The first read does not block: it resolves "$" to an id at once (so
	// nothing made after the command started is missed) and reports a Redis
	// that fails right away as unreachable rather than retrying.
	page, err := er.Read(ctx, from, 0, 0)
	if err != nil {
		if ctx.Err() != nil {
			return exitOK
		}
		return a.redisError(cn, err)
	}
	last := page.Next
	p.header()
	// The waits between reads after Redis stopped answering: the project's
	// policy, as the services' loops (full jitter, 100ms to 5s).
	b := retry.New("events stream reads", retry.Default, retry.WithClock(a.clock), retry.WithRand(a.rand))
	// Names come from keys (package registry), and an event has none: one
	// whose service or instance cannot be a name was not written by an
	// instance. It is skipped, with a warning at most once a minute.
	skips := ratelog.New(a.warner(), a.clock, ratelog.DefaultInterval)
	for {
		for _, s := range page.Skipped {
			if service == "" || s.Service == service || s.Service == "" {
				claims := ""
				if s.Service != "" || s.Instance != "" {
					claims = fmt.Sprintf(" (service \"%s\", instance \"%s\")", cell(s.Service), cell(s.Instance))
				}
				a.warn("skipped entry %s of %s unread: %s%s; an event holds at most %d bytes in %d fields",
					cell(s.ID), registry.EventsKey, s.Why, claims, registry.MaxEventLen, registry.MaxEventFields)
			}
		}
		for _, ev := range page.Events {
			if service != "" && ev.Service != service || instance != "" && ev.Instance != instance {
				continue
			}
			if err := registry.ValidateNames(ev.Service, ev.Instance); err != nil {
				skips.Log(ctx, slog.LevelWarn, "skipping an event whose service or instance cannot be a name",
					"id", ev.ID, "service", ev.Service, "instance", ev.Instance)
				continue
			}
			if err := p.print(ev); err != nil {
				fmt.Fprintf(a.stderr, "sgctl watch: writing output: %v\n", err)
				return exitFailed
			}
		}
		page, err = er.Read(ctx, last, 0, watchBlock)
		if ctx.Err() != nil {
			return exitOK
		}
		if err != nil {
			page = registry.EventPage{}
			wait := b.Failed(ctx, err)
			fmt.Fprintf(a.stderr, "sgctl watch: %s; retrying in %v\n", cn.unreachable(err), wait.Round(time.Millisecond))
			if !b.Wait(ctx, wait) {
				return exitOK
			}
			continue
		}
		if b.Failing() {
			fmt.Fprintf(a.stderr, "sgctl watch: Redis at %s answers again; resuming after %s\n", cn.addr, last)
			b.Succeeded(ctx)
		}
		last = page.Next
	}
}

// validStreamID accepts what XREAD accepts after a stream name: "$", or
// "ms" or "ms-seq" with decimal numbers.
func validStreamID(id string) bool {
	if id == "$" {
		return true
	}
	ms, seq, hasSeq := strings.Cut(id, "-")
	return digits(ms) && (!hasSeq || digits(seq))
}

func digits(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// eventPrinter writes transitions as fixed-width lines or NDJSON. Lines
// are written as they come (no tabwriter: a watch never ends), so columns
// are padded to widths that fit the lifecycle's names; longer values push
// the rest of their line right. Every field is cleaned and cut (cell): the
// stream is writable by anyone with Redis access; --json has whole values.
type eventPrinter struct {
	w    io.Writer
	json bool
}

const watchLine = "%-24s  %-12s  %-16s  %-38s  %-16s  %-18s  %-5s  %s\n"

func (p *eventPrinter) header() {
	if !p.json {
		fmt.Fprintf(p.w, watchLine, "TIME", "SERVICE", "INSTANCE", "FROM -> TO", "EVENT", "GUARD", "PHASE", "ERROR")
	}
}

func (p *eventPrinter) print(ev registry.Event) error {
	if p.json {
		b, err := json.Marshal(watchEvent{
			ID: ev.ID, Time: ev.Time, Service: ev.Service, Instance: ev.Instance,
			From: ev.From, To: ev.To, Event: ev.Event, Guard: ev.Guard, Phase: ev.Phase,
			Degraded: ev.Degraded, Error: ev.Error, TraceID: ev.TraceID,
		})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.w, "%s\n", safeJSON(b))
		return err
	}
	ts := "-"
	if !ev.Time.IsZero() {
		ts = ev.Time.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	errText := "-"
	if ev.Error != "" {
		errText = `"` + cut(ev.Error, 4*maxCell) + `"`
	}
	_, err := fmt.Fprintf(p.w, watchLine, ts, dash(cell(ev.Service)), dash(cell(ev.Instance)),
		dash(cell(ev.From))+" -> "+dash(cell(ev.To)), dash(cell(ev.Event)), dash(cell(ev.Guard)), dash(cell(ev.Phase)), errText)
	return err
}
