package registry_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/registry"
)

// jsonLogger returns a JSON logger writing to l, undecorated, as
// WithLogger asks.
func (l *logBuffer) jsonLogger() *slog.Logger { return slog.New(slog.NewJSONHandler(l, nil)) }

// lineKeys returns the keys of one JSON log line, in order, repeats
// included: encoding/json would keep only the last of a repeated key.
func lineKeys(line string) ([]string, error) {
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object (%v)", err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// checkLines fails the test for every line of logs that names a key twice,
// lacks one of want or puts an error under "err" (the project's key is
// "error"), and for every message of expect that no line has.
func checkLines(t *testing.T, who string, logs *logBuffer, want []string, expect []string) {
	t.Helper()
	lines := logs.lines()
	if len(lines) == 0 {
		t.Fatalf("%s logged nothing", who)
	}
	msgs := map[string]bool{}
	for _, line := range lines {
		keys, err := lineKeys(line)
		if err != nil {
			t.Errorf("%s: line %s: %v", who, line, err)
			continue
		}
		if k := repeated(keys); k != "" {
			t.Errorf("%s: key %q repeated in %s", who, k, line)
		}
		if slices.Contains(keys, "err") {
			t.Errorf(`%s: an error under "err", not "error": %s`, who, line)
		}
		for _, k := range want {
			if !slices.Contains(keys, k) {
				t.Errorf("%s: no %q in %s", who, k, line)
			}
		}
		var l struct{ Msg string }
		_ = json.Unmarshal([]byte(line), &l)
		msgs[l.Msg] = true
	}
	for _, msg := range expect {
		if !msgs[msg] {
			t.Errorf("%s never logged %q", who, msg)
		}
	}
}

// repeated returns the first key that keys holds twice, or "".
func repeated(keys []string) string {
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			return k
		}
		seen[k] = true
	}
	return ""
}

// A member and a watcher, logging through an undecorated logger as
// WithLogger asks, go through every kind of line they write: a take-over,
// foreign data replaced, a vanished entry, an outage of writes, heartbeats
// and reads and its end, an unreadable entry, a conflict with a second
// process. No line names an attribute twice; every member line names its
// service and instance, every watcher line its service; errors go under
// "error".
func TestEveryLineAMemberAndAWatcherLogNamesEachAttributeOnce(t *testing.T) {
	mr := miniredis.RunT(t)
	clk := clockwork.NewFakeClockAt(time.Now())
	// One dial per attempt, so an outage shows at once.
	c := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = c.Close() })
	ctx := t.Context()
	const ttl = 3 * time.Second
	newRegistry := func(logs *logBuffer) *registry.Registry {
		return registry.New(c, registry.WithClock(clk), registry.WithTTL(ttl), registry.WithLogger(logs.jsonLogger()),
			registry.WithRetryBackoff(10*time.Millisecond, 100*time.Millisecond))
	}
	memberLogs, watcherLogs, otherLogs := &logBuffer{}, &logBuffer{}, &logBuffer{}

	// The watcher: an unreadable entry announced as running.
	wreg := newRegistry(watcherLogs)
	w := watch(t, wreg, "api", registry.WithWatchBlock(50*time.Millisecond))
	bad := registry.EntryKey("api", "api-bad")
	mr.Set(bad, "{not json")
	mr.ZAdd(registry.IndexKey("api"), float64(clk.Now().Add(time.Hour).UnixMilli()), "api-bad")
	if _, err := wreg.Publish(ctx, registry.Event{Service: "api", Instance: "api-bad", Event: "test", From: "serving_health", To: "running"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, nil, func() bool { return len(watcherLogs.lines("unreadable", bad)) > 0 },
		"the watcher reports the unreadable entry")

	// The member: it takes over a predecessor's entry and replaces an index
	// key of the wrong type.
	mr.Del(registry.IndexKey("api"))
	mr.Set(registry.IndexKey("api"), "junk")
	prev := entry("api", "i1", "running")
	prev.Owner, prev.Host, prev.PID = "predecessor", "host-old", 1
	raw, _ := json.Marshal(prev)
	mr.Set(registry.EntryKey("api", "i1"), string(raw))
	m := newMember(t, newRegistry(memberLogs), entry("api", "i1", "registering"))
	if err := m.Register(ctx, entry("api", "i1", "registering")); err != nil {
		t.Fatal(err)
	}
	m.StartHeartbeat()
	m.Update(entry("api", "i1", "running"), transition("serving_health", "running"))
	eventually(t, 10*time.Second, nil, func() bool { st := m.Stats(); return !st.EntryPending && st.QueuedEvents == 0 },
		"the update delivered")
	tick := func() { clk.Advance(time.Second) }
	mr.FlushAll()
	eventually(t, 10*time.Second, tick, func() bool { return len(memberLogs.lines("vanished")) > 0 },
		"the heartbeat re-registers the flushed entry")

	// An outage: writes, heartbeats and reads fail, then recover.
	mr.Close()
	m.Update(entry("api", "i1", "pulling"), transition("running", "pulling"))
	eventually(t, 10*time.Second, tick, func() bool {
		return len(memberLogs.lines("writes failing")) > 0 && len(memberLogs.lines("heartbeat failed")) > 0 &&
			len(watcherLogs.lines("watcher reads failing")) > 0
	}, "writes, heartbeats and the watcher's reads fail")
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, tick, func() bool {
		return len(memberLogs.lines("writes recovered")) > 0 && len(memberLogs.lines("heartbeat recovered")) > 0 &&
			len(watcherLogs.lines("watcher reads recovered")) > 0
	}, "writes, heartbeats and the watcher's reads recover")

	// A second process with the same instance id takes the entry over; the
	// member's next write finds it out.
	other := newMember(t, newRegistry(otherLogs), entry("api", "i1", "registering"))
	if err := other.Register(ctx, entry("api", "i1", "running")); err != nil {
		t.Fatal(err)
	}
	m.Update(entry("api", "i1", "running"), transition("pulling", "running"))
	eventually(t, 10*time.Second, tick, func() bool { return m.Conflict() != nil }, "the member sees the conflict")
	_ = w.Close()

	checkLines(t, "the member", memberLogs, []string{"service", "instance"}, []string{
		"registry: took over an entry that had not expired, written by another process; if it still runs, two processes share this instance id (it stops writing the entry until this one's is gone)",
		"registry: replaced a registry key of the wrong type",
		"registry: entry had vanished; re-registered",
		"registry: writes failing; retrying with backoff",
		"registry: writes recovered",
		"registry: heartbeat failed",
		"registry: heartbeat recovered",
		"registry: another process took this instance's entry over; this process stops writing it, and takes it back once that process's entry is gone (give each process its own instance id)",
	})
	checkLines(t, "the other process's member", otherLogs, []string{"service", "instance"},
		// Both members' entries say host-1, pid 4242: to the other one it is
		// the image its process replaced.
		[]string{"registry: took the entry over from the process image this one replaced"})
	checkLines(t, "the watcher", watcherLogs, []string{"service"}, []string{
		"registry: skipping unreadable entry",
		"registry: watcher reads failing; retrying with backoff",
		"registry: watcher reads recovered",
	})
	if t.Failed() {
		t.Logf("member:\n%s\nwatcher:\n%s", memberLogs, watcherLogs)
	}
}

// The control of the test above: given a logger that already names the
// service and the instance, as the lifecycle's own logger does, a member's
// lines name them twice, and the check sees it.
func TestALoggerThatAlreadyNamesTheInstanceGetsItTwice(t *testing.T) {
	mr := miniredis.RunT(t)
	logs := &logBuffer{}
	r := registry.New(newClient(t, mr.Addr()), registry.WithLogger(logs.jsonLogger().With("service", "api", "instance", "i1")))
	prev := entry("api", "i1", "running")
	prev.Owner = "predecessor"
	raw, _ := json.Marshal(prev)
	mr.Set(registry.EntryKey("api", "i1"), string(raw))
	m := newMember(t, r, entry("api", "i1", "registering"))
	if err := m.Register(t.Context(), entry("api", "i1", "registering")); err != nil {
		t.Fatal(err)
	}
	lines := logs.lines("took the entry over")
	if len(lines) != 1 {
		t.Fatalf("%d take-over lines, want 1:\n%s", len(lines), logs)
	}
	keys, err := lineKeys(lines[0])
	if err != nil {
		t.Fatal(err)
	}
	if k := repeated(keys); k != "service" {
		t.Fatalf("keys %v: repeated %q, want service named twice", keys, k)
	}
}
