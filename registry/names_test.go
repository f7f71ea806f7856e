package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/registry"
)

// Names come from keys: whoever can write to Redis can write an entry under
// one key whose JSON names another instance, or none. The security review
// wrote one under sg:registry:service:{evil}:decoy-2 saying service "demo",
// instance "": the dashboard listed it as demo/?, and its Restart button
// restarted every demo instance at once (an empty instance is target "*").

// forged is an entry written under the key of (service, instance) whose
// JSON says (jsonService, jsonInstance).
type forged struct {
	service, instance         string
	jsonService, jsonInstance string
}

var forgeries = []forged{
	{"evil", "decoy-2", "demo", ""},            // the review's: another service, no instance
	{"demo", "ghost", "demo", "demo-1"},        // another instance's name
	{"demo", "anon", "", ""},                   // no names at all
	{"demo", "nosvc", "", "nosvc"},             // no service
	{"demo", "elsewhere", "evil", "elsewhere"}, // another service
	{"demo", "bad*id", "demo", "bad*id"},       // an index member that cannot be an instance id
}

// forge writes f with raw commands, as a writer without the registry's
// checks would: the entry, its index member (expiring in an hour) and the
// services set. Its host and addr say "forged".
func forge(t *testing.T, c redis.UniversalClient, f forged, status string) {
	t.Helper()
	b, err := json.Marshal(registry.Entry{Service: f.jsonService, Instance: f.jsonInstance, Status: status,
		Host: "forged", Addr: "forged.example:80", PID: 666, Control: "signed"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Set(ctx, registry.EntryKey(f.service, f.instance), b, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ZAdd(ctx, registry.IndexKey(f.service), redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: f.instance}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.SAdd(ctx, registry.ServicesKey, f.service).Err(); err != nil {
		t.Fatal(err)
	}
}

// skipKey is what the warning about f names: the entry's key, or for an
// index member that cannot be an id, the index key.
func (f forged) skipKey() string {
	if strings.Contains(f.instance, "*") {
		return registry.IndexKey(f.service)
	}
	return registry.EntryKey(f.service, f.instance)
}

func TestListSkipsEntriesWhoseJSONNamesAreNotTheirKeysWithARateLimitedWarning(t *testing.T) {
	for _, b := range backends[:2] { // miniredis and a real redis-server
		t.Run(b.name, func(t *testing.T) {
			c := b.client(t)
			ctx := t.Context()
			logs := &logBuffer{}
			clk := clockwork.NewFakeClockAt(time.Now())
			r := registry.New(c, registry.WithLogger(logs.logger()), registry.WithClock(clk), registry.WithTTL(time.Hour))
			for _, id := range []string{"demo-1", "demo-2"} {
				if err := r.Register(ctx, entry("demo", id, "running")); err != nil {
					t.Fatal(err)
				}
			}
			for _, f := range forgeries {
				forge(t, c, f, "running")
			}

			for _, svc := range []string{"demo", "evil"} {
				ins, err := r.List(ctx, svc)
				if err != nil {
					t.Fatal(err)
				}
				want := map[string][]string{"demo": {"demo-1", "demo-2"}, "evil": {}}[svc]
				if got := ids(ins); !slices.Equal(got, want) {
					t.Errorf("List(%s) = %q, want %q", svc, got, want)
				}
				for _, in := range ins {
					if in.Host == "forged" || in.Service != svc {
						t.Errorf("List(%s) holds a forged entry: %+v", svc, in.Entry)
					}
				}
			}
			if es, err := r.Instances(ctx, "demo"); err != nil || len(es) != 2 || es[0].Host == "forged" || es[1].Host == "forged" {
				t.Errorf("Instances(demo) = %+v, %v; want demo-1 and demo-2, not forged", es, err)
			}
			for _, f := range forgeries {
				if got := logs.lines("level=WARN", "registry: skipping", f.skipKey()); len(got) != 1 {
					t.Errorf("%d warnings naming %s, want 1:\n%s", len(got), f.skipKey(), logs)
				}
			}

			// A dashboard lists every few seconds: each key is named once a
			// minute, with the count of the listings left out (Instances
			// above and the three below).
			for range 3 {
				if _, err := r.List(ctx, "demo"); err != nil {
					t.Fatal(err)
				}
			}
			ghost := registry.EntryKey("demo", "ghost")
			if got := logs.lines("level=WARN", ghost); len(got) != 1 {
				t.Errorf("%d warnings naming %s after 5 listings in a minute, want 1", len(got), ghost)
			}
			clk.Advance(time.Minute)
			if _, err := r.List(ctx, "demo"); err != nil {
				t.Fatal(err)
			}
			if got := logs.lines("level=WARN", ghost, "suppressed=4"); len(got) != 1 {
				t.Errorf("a minute later, no warning naming %s with suppressed=4:\n%s", ghost, logs)
			}
		})
	}
}

// A Watcher routes: a forged entry that named a running instance would
// send that instance's traffic to the forger's address.
func TestWatcherSkipsEntriesWhoseJSONNamesAreNotTheirKeys(t *testing.T) {
	for _, b := range backends[:2] {
		t.Run(b.name, func(t *testing.T) {
			c := b.client(t)
			logs := &logBuffer{}
			reg := registry.New(c, registry.WithLogger(logs.logger()), registry.WithTTL(time.Hour))
			runningMember(t, reg, "demo", "demo-1", "10.0.0.1:80")
			for _, f := range forgeries {
				forge(t, c, f, "running")
			}
			realOnly := func(ins []registry.Instance) bool {
				return slices.Equal(ids(ins), []string{"demo-1"}) && ins[0].Addr == "10.0.0.1:80"
			}

			// The first resync reads the listing.
			w := watch(t, reg, "demo", registry.WithWatchBlock(50*time.Millisecond))
			eventually(t, eventDeadline, nil, func() bool { return len(w.Running()) > 0 }, "demo-1 running in the view")
			if ins := w.Running(); !realOnly(ins) {
				t.Errorf("after the resync the view is %+v, want demo-1 at 10.0.0.1:80 only", ins)
			}
			for _, f := range forgeries[1:] {
				if got := logs.lines("level=WARN", "service=demo", f.skipKey()); len(got) != 1 {
					t.Errorf("the resync: %d warnings naming %s, want 1:\n%s", len(got), f.skipKey(), logs)
				}
			}

			// An event to running makes the watcher GET the entry: a new
			// forged one, and one whose id cannot be an instance id.
			late := []forged{{"demo", "late", "demo", ""}, {"demo", "late-2", "demo", "demo-1"}, {"demo", "late:3", "demo", "late:3"}}
			for _, f := range late {
				forge(t, c, f, "running")
				// Raw: Publish refuses an id that cannot be a name.
				if err := c.XAdd(t.Context(), &redis.XAddArgs{Stream: registry.EventsKey, Values: map[string]any{"service": "demo",
					"instance": f.instance, "event": "test", "from": "serving_health", "to": "running"}}).Err(); err != nil {
					t.Fatal(err)
				}
			}
			warned := func() bool {
				for _, f := range late {
					key := registry.EntryKey(f.service, f.instance)
					if f.instance == "late:3" { // no key of the registry's: named by its id
						key = "late:3"
					}
					if len(logs.lines("level=WARN", "registry: skipping", key)) == 0 {
						return false
					}
				}
				return true
			}
			eventually(t, eventDeadline, nil, func() bool { return warned() || !realOnly(w.Running()) },
				"the watcher reads the forged entries the events announce")
			if ins := w.Running(); !realOnly(ins) {
				t.Errorf("after the events the view is %+v, want demo-1 at 10.0.0.1:80 only", ins)
			}
			if !warned() {
				t.Errorf("the entries the events announced are not named in warnings:\n%s", logs)
			}
		})
	}
}

func TestEntryAndDecodeEntryRefuseAnEntryThatNamesAnotherInstance(t *testing.T) {
	c := backends[0].client(t)
	r := registry.New(c)
	for _, f := range forgeries[:5] {
		forge(t, c, f, "running")
		_, err := r.Entry(t.Context(), f.service, f.instance)
		var mm *registry.NameMismatchError
		if !errors.Is(err, registry.ErrNameMismatch) || !errors.As(err, &mm) || mm.Service != f.jsonService || mm.Instance != f.jsonInstance {
			t.Errorf("Entry(%s, %s) = %v, want a NameMismatchError naming %q/%q", f.service, f.instance, err, f.jsonService, f.jsonInstance)
		}
	}
	if _, err := r.Entry(t.Context(), "demo", "bad*id"); !errors.Is(err, registry.ErrInvalidName) {
		t.Errorf("Entry(demo, bad*id) = %v, want ErrInvalidName", err)
	}
	raw := []byte(`{"service":"demo","instance":"demo-1","status":"running"}`)
	if e, err := registry.DecodeEntry("demo", "demo-1", raw); err != nil || e.Status != "running" {
		t.Errorf("DecodeEntry of demo-1's own entry = %+v, %v", e, err)
	}
	if _, err := registry.DecodeEntry("demo", "demo-1", []byte(`{"service":"demo","instance":"demo-1\u202e"}`)); !errors.Is(err, registry.ErrNameMismatch) ||
		strings.Contains(err.Error(), "\u202e") {
		t.Errorf("DecodeEntry of a lookalike name = %v, want ErrNameMismatch with the name escaped", err)
	}
	long := strings.Repeat("x", 1<<20)
	if _, err := registry.DecodeEntry("demo", "demo-1", []byte(`{"service":"demo","instance":"`+long+`"}`)); err == nil || len(err.Error()) > 512 {
		t.Errorf("DecodeEntry of a 1 MB instance: an error of %d bytes, want a short one", len(fmt.Sprint(err)))
	}
}
