package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/registry"
)

// Anyone who can write to the fleet's Redis can put anything in the registry
// and the streams. These tests write what broke sgctl, with raw commands.

// terminalBytes are bytes a terminal acts on: ESC, BEL, DEL, and CSI (U+009B)
// as UTF-8.
var terminalBytes = []string{"\x1b", "\x07", "\x7f", "\u009b"}

// hostile is text that clears the screen, retitles the terminal, rings the
// bell and starts a C1 control sequence.
const hostile = "\x1b[2J\x1b]0;pwned\x07\u009b31m\x7f"

func noTerminalBytes(t *testing.T, what, out string) {
	t.Helper()
	for _, b := range terminalBytes {
		if strings.Contains(out, b) {
			t.Errorf("%s holds the raw byte(s) %q:\n%q", what, b, out)
		}
	}
}

// rawEntry writes an entry and its index member with raw commands, as a
// hostile or broken writer would, bypassing package registry's checks.
func rawEntry(t *testing.T, mr *miniredis.Miniredis, service, instance, value string) {
	t.Helper()
	if _, err := mr.SetAdd(registry.ServicesKey, service); err != nil {
		t.Fatal(err)
	}
	if _, err := mr.ZAdd(registry.IndexKey(service), float64(time.Now().Add(time.Hour).UnixMilli()), instance); err != nil {
		t.Fatal(err)
	}
	if err := mr.Set(registry.EntryKey(service, instance), value); err != nil {
		t.Fatal(err)
	}
}

func warningLines(stderr string) []string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "sgctl ps: warning: ") {
			out = append(out, l)
		}
	}
	return out
}

// The report's inputs: a ” and a spaced name in sg:registry:services, an
// index key of the wrong type. Plus an entry key of the wrong type and an
// entry that is not JSON. Each is one warning line; the rest is listed.
func TestPsSkipsBadRegistryDataWithOneWarningEachAndListsTheRest(t *testing.T) {
	f := newFleet(t, 30*time.Second, demoEntries(time.Now())...)
	for _, name := range []string{"", "bad name", "\x1b[31mevil"} {
		if _, err := f.mr.SetAdd(registry.ServicesKey, name); err != nil {
			t.Fatal(err)
		}
	}
	f.mr.Del(registry.IndexKey("api"))
	f.mr.Set(registry.IndexKey("api"), "not a sorted set")
	rawEntry(t, f.mr, "web", "web-1", `{"service":"web","instance":"web-1","status":"running","host":"h9","pid":9}`)
	rawEntry(t, f.mr, "web", "web-2", "")
	f.mr.Del(registry.EntryKey("web", "web-2"))
	f.mr.HSet(registry.EntryKey("web", "web-2"), "status", "running")
	rawEntry(t, f.mr, "web", "web-3", "{not json")

	for _, asJSON := range []bool{false, true} {
		args := []string{"ps"}
		if asJSON {
			args = append(args, "--json")
		}
		r := sgctl(t, t.Context(), f.env, nil, args...)
		if r.code != exitOK {
			t.Fatalf("%v: exit code %d, want 0", args, r.code)
		}
		warns := warningLines(r.stderr)
		for _, want := range []string{
			`skipping "" in sg:registry:services`,
			`skipping "bad name" in sg:registry:services`,
			`skipping "\x1b[31mevil" in sg:registry:services`,
			`skipping service "api": registry: reading index sg:registry:index:{api}: WRONGTYPE`,
			`key=sg:registry:service:{web}:web-2 type=hash`,
			`unreadable entry key=sg:registry:service:{web}:web-3`,
		} {
			n := 0
			for _, w := range warns {
				if strings.Contains(w, want) {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%v: %d warning lines with %q, want 1:\n%s", args, n, want, r.stderr)
			}
		}
		if len(warns) != 6 {
			t.Errorf("%v: %d warning lines, want 6:\n%s", args, len(warns), r.stderr)
		}
		noTerminalBytes(t, "stderr", r.stderr)

		var listed []string
		if asJSON {
			var entries []registry.Entry
			if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil {
				t.Fatalf("--json: %v\n%s", err, r.stdout)
			}
			for _, e := range entries {
				listed = append(listed, e.Instance)
			}
		} else {
			for _, row := range rows(r.stdout)[1:] {
				listed = append(listed, row[1])
			}
		}
		if fmt.Sprint(listed) != "[demo-a demo-b web-1]" {
			t.Errorf("%v: listed %v, want demo-a demo-b web-1", args, listed)
		}
	}
}

func TestPsWithAServicesKeyOfTheWrongTypeFailsNamingIt(t *testing.T) {
	mr := miniredis.RunT(t)
	mr.Set(registry.ServicesKey, "oops")
	r := sgctl(t, t.Context(), map[string]string{"REDIS_URL": "redis://" + mr.Addr()}, nil, "ps")
	if r.code != exitFailed || !strings.Contains(r.stderr, "sg:registry:services: WRONGTYPE") {
		t.Fatalf("got %d %q: want exit 1 naming the key (nothing else can be listed)", r.code, r.stderr)
	}
}

// An entry whose every field carries escape sequences, with a 60 KB host (an
// entry of 2 MB is over what the registry reads: registry.MaxEntryJSONLen),
// and an entry under an instance id (in the index) that is itself hostile:
// names come from keys, so that one is skipped, with its warning escaped.
func TestPsEscapesControlCharactersAndCutsLongFieldsInTheTable(t *testing.T) {
	mr := miniredis.RunT(t)
	host := hostile + strings.Repeat("h", 60<<10)
	b, _ := json.Marshal(registry.Entry{Service: "demo", Instance: "i-1", Status: "running" + hostile, Phase: hostile,
		Host: host, PID: 7, Version: hostile, StartedAt: time.Now()})
	rawEntry(t, mr, "demo", "i-1", string(b))
	badID := "i-" + hostile
	b, _ = json.Marshal(registry.Entry{Service: "demo", Instance: badID, Status: "running", Host: "h", PID: 8})
	rawEntry(t, mr, "demo", badID, string(b))
	env := map[string]string{"REDIS_URL": "redis://" + mr.Addr()}

	r := sgctl(t, t.Context(), env, nil, "ps")
	if r.code != exitOK {
		t.Fatalf("exit code %d, want 0", r.code)
	}
	noTerminalBytes(t, "the table", r.stdout)
	noTerminalBytes(t, "stderr", r.stderr)
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want the header and one row (the hostile id skipped)", len(lines))
	}
	if n := len(lines[1]); n > 2000 {
		t.Errorf("the row is %d bytes: the 60 KB host was not cut", n)
	}
	t.Logf("the row of an entry with a %d-byte host is %d bytes", len(host), len(lines[1]))
	for _, want := range []string{"i-1", `running\x1b[2J`, `\x1b[2J\x1b]0;pwned\a\u009b31m\x7fhhhh`, "hhh…"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row lacks %q:\n%s", want, lines[1])
		}
	}
	if !strings.Contains(r.stderr, `member=i-\x1b[2J\x1b]0;pwned\a\u009b31m\x7f`) {
		t.Errorf("the hostile index member is not named, escaped, in a warning:\n%s", r.stderr)
	}

	// --json keeps every value whole, and escaped.
	r = sgctl(t, t.Context(), env, nil, "ps", "--json")
	noTerminalBytes(t, "--json", r.stdout)
	var got []registry.Entry
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got) != 1 {
		t.Fatalf("--json: %v, %d entries", err, len(got))
	}
	if got[0].Host != host || got[0].Instance != "i-1" || got[0].Status != "running"+hostile {
		t.Errorf("--json changed the values (host %d bytes, want %d)", len(got[0].Host), len(host))
	}

	// An entry of 2 MB is not read: a warning names its key, the rest is listed.
	b, _ = json.Marshal(registry.Entry{Service: "demo", Instance: "i-big", Status: "running", Host: strings.Repeat("h", 2<<20)})
	rawEntry(t, mr, "demo", "i-big", string(b))
	r = sgctl(t, t.Context(), env, nil, "ps")
	noTerminalBytes(t, "stderr", r.stderr)
	if r.code != exitOK || strings.Count(strings.TrimRight(r.stdout, "\n"), "\n") != 1 ||
		!strings.Contains(r.stderr, "oversized entry") || !strings.Contains(r.stderr, "i-big") {
		t.Errorf("ps with a 2 MB entry: exit %d\n%s\n%s\nwant the other row and a warning naming it", r.code, r.stdout, r.stderr)
	}
}

func TestWatchEscapesControlCharactersFromTheStream(t *testing.T) {
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	// An event as large as an event may be, and one far larger, which the
	// watch leaves out unread, naming it in a warning.
	long := hostile + strings.Repeat("e", 4000)
	for _, errText := range []string{long, hostile + strings.Repeat("e", 2<<20)} {
		if err := c.XAdd(t.Context(), &redis.XAddArgs{Stream: registry.EventsKey, Values: map[string]any{
			"service": "demo", "instance": "i-1", "event": "stop" + hostile,
			"from": "running" + hostile, "to": "stopping_daemons" + hostile, "phase": "S1", "degraded": "false",
			"time": time.Now().UTC().Format(time.RFC3339Nano), "error": errText,
		}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"REDIS_URL": "redis://" + mr.Addr()}
	w := startWatch(t, env, "--from", "0")
	w.waitFor(`stop\x1b[2J`)
	eventually(t, 5*time.Second, func() bool { return strings.Contains(w.stderr.String(), "skipped entry") },
		func() string { return "no warning of the oversized entry:\n" + w.stderr.String() })
	if code := w.stop(); code != exitOK {
		t.Fatalf("exit code %d", code)
	}
	out := w.stdout.String()
	noTerminalBytes(t, "watch", out)
	if len(out) > 4000 || strings.Count(out, "\n") != 2 || !strings.Contains(out, `running\x1b[2J`) || !strings.Contains(out, `stopping_daemons\x1b[2J`) || !strings.Contains(out, "eee…") {
		t.Errorf("watch output (%d bytes) not the header and one line, escaped and cut:\n%.600s", len(out), out)
	}
	warning := w.stderr.String()
	noTerminalBytes(t, "the warning", warning)
	if !strings.Contains(warning, "a field of") || len(warning) > 2000 {
		t.Errorf("the warning (%d bytes) does not say what was too large:\n%.600s", len(warning), warning)
	}

	jw := startWatch(t, env, "--from", "0", "--json")
	jw.waitFor(`"service":"demo`)
	jw.stop()
	out = jw.stdout.String()
	noTerminalBytes(t, "watch --json", out)
	var ev watchEvent
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Event != "stop"+hostile || ev.To != "stopping_daemons"+hostile || ev.Error != long {
		t.Errorf("--json changed the values")
	}
}

// Results come from a stream anyone can write: their reasons and states are
// escaped in the progress lines and the summary.
func TestPullWaitEscapesWhatInstancesReport(t *testing.T) {
	mr := miniredis.RunT(t)
	startResponder(t, mr, "demo", runningDemo(1), func(controlops.Op, registry.Entry) ([]controlops.Status, []string, *registry.Entry) {
		return []controlops.Status{controlops.StatusFailed}, []string{"pull failed: " + hostile}, nil
	})
	env := map[string]string{"REDIS_URL": "redis://" + mr.Addr(), "SG_CONTROL_KEY": testKey}
	r := sgctl(t, t.Context(), env, nil, "pull", "demo", "--wait", "--timeout", "10s")
	if r.code != exitFailed {
		t.Fatalf("exit code %d, want 1 (the pull failed)", r.code)
	}
	noTerminalBytes(t, "stdout", r.stdout)
	noTerminalBytes(t, "stderr", r.stderr)
	if n := strings.Count(r.stdout, `pull failed: \x1b[2J\x1b]0;pwned\a`); n != 2 {
		t.Errorf("the reason appears escaped %d times, want 2 (result line and summary):\n%s", n, r.stdout)
	}
}

func TestCleanEscapesEverythingATerminalActsOnAndCellCutsWithAnEllipsis(t *testing.T) {
	for in, want := range map[string]string{
		"h1":                 "h1",
		"naïve-ホスト":          "naïve-ホスト",
		"\x1b[31mred\x1b[0m": `\x1b[31mred\x1b[0m`,
		"a\u202eb":           `a\u202eb`, // right-to-left override
		"bad\xffutf8":        `bad\xffutf8`,
		"tab\tnl\n":          `tab\tnl\n`,
		"\u009b2J":           `\u009b2J`,
		`q"b\`:               `q"b\\`, // a quote is visible; a backslash is escaped
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %s, want %s", in, got, want)
		}
	}
	long := strings.Repeat("ホ", maxCell+1)
	if got := cell(long); got != strings.Repeat("ホ", maxCell)+"…" {
		t.Errorf("cell of %d runes = %d runes, want %d and an ellipsis", maxCell+1, len([]rune(got)), maxCell)
	}
	if got := cell(strings.Repeat("x", maxCell)); got != strings.Repeat("x", maxCell) {
		t.Errorf("cell cut a value of exactly %d characters", maxCell)
	}
	if got := string(safeJSON([]byte("\"a\u009bb\x7f\""))); got != `"a\u009bb\u007f"` {
		t.Errorf("safeJSON = %s", got)
	}
}
