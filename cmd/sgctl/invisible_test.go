package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/controlops"
	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// invisibleRunes render as nothing or reorder the text around them: bidi
// override and isolates, zero-width space, byte order mark, soft hyphen, a
// tag character (all Cf), a Hangul filler and the combining grapheme joiner
// (graphic, but default ignorable).
var invisibleRunes = []string{"\u202e", "\u2066", "\u2069", "\u200b", "\ufeff", "\u00ad", "\U000e0041", "\u3164", "\u034f"}

const invisibleText = "ok\u202e\u2066\u2069\u200b\ufeff\u00ad\U000e0041\u3164\u034fgnp"

func noInvisibleRunes(t *testing.T, what, out string) {
	t.Helper()
	for _, r := range invisibleRunes {
		if strings.Contains(out, r) {
			t.Errorf("%s holds the raw %+q:\n%+q", what, r, out)
		}
	}
}

func TestPsAndWatchEscapeInvisibleFormatCharactersInTextAndJSON(t *testing.T) {
	srv := redistest.Server(t)
	c := srv.Client(t)
	e := registry.Entry{Service: "demo", Instance: "i-1", Status: "running", Host: invisibleText, PID: 7, Version: invisibleText, StartedAt: time.Now()}
	b, _ := json.Marshal(e)
	ctx := t.Context()
	if err := c.SAdd(ctx, registry.ServicesKey, "demo").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ZAdd(ctx, registry.IndexKey("demo"), redis.Z{Score: float64(time.Now().Add(time.Hour).UnixMilli()), Member: "i-1"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, registry.EntryKey("demo", "i-1"), b, 0).Err(); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"REDIS_URL": srv.URL()}

	r := sgctl(t, ctx, env, nil, "ps")
	noInvisibleRunes(t, "ps", r.stdout)
	if !strings.Contains(r.stdout, `ok\u202e\u2066\u2069\u200b\ufeff\u00ad\U000e0041\u3164\u034fgnp`) {
		t.Errorf("ps does not show the host escaped:\n%s", r.stdout)
	}
	r = sgctl(t, ctx, env, nil, "ps", "--json")
	noInvisibleRunes(t, "ps --json", r.stdout)
	var got []registry.Entry
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got) != 1 || got[0].Host != invisibleText {
		t.Fatalf("ps --json: %v, %+v: want the entry, its values whole", err, got)
	}

	if err := c.XAdd(ctx, &redis.XAddArgs{Stream: registry.EventsKey, Values: map[string]any{
		"service": "demo", "instance": "i-1", "event": "stop", "from": "running", "to": "stopping_daemons",
		"phase": "S1", "degraded": "false", "time": time.Now().UTC().Format(time.RFC3339Nano), "error": invisibleText,
	}}).Err(); err != nil {
		t.Fatal(err)
	}
	for _, asJSON := range []bool{false, true} {
		args := []string{"--from", "0"}
		if asJSON {
			args = append(args, "--json")
		}
		w := startWatch(t, env, args...)
		w.waitFor(`gnp`)
		w.stop()
		noInvisibleRunes(t, "watch "+strings.Join(args, " "), w.stdout.String())
		if asJSON {
			var ev watchEvent
			if err := json.Unmarshal([]byte(strings.SplitN(w.stdout.String(), "\n", 2)[0]), &ev); err != nil || ev.Error != invisibleText {
				t.Errorf("watch --json: %v, error %+q: want the value whole", err, ev.Error)
			}
		}
	}
}

// The results of an op come from a stream anyone can write (here a fake
// instance on miniredis answers): text and --json escape them alike.
func TestPullResultsEscapeInvisibleFormatCharactersInTextAndJSON(t *testing.T) {
	for _, asJSON := range []bool{false, true} {
		mr := miniredis.RunT(t)
		startResponder(t, mr, "demo", runningDemo(1), func(controlops.Op, registry.Entry) ([]controlops.Status, []string, *registry.Entry) {
			return []controlops.Status{controlops.StatusFailed}, []string{"pull failed: " + invisibleText}, nil
		})
		env := map[string]string{"REDIS_URL": "redis://" + mr.Addr(), "SG_CONTROL_KEY": testKey}
		args := []string{"pull", "demo", "--wait", "--timeout", "10s"}
		if asJSON {
			args = append(args, "--json")
		}
		r := sgctl(t, t.Context(), env, nil, args...)
		noInvisibleRunes(t, strings.Join(args, " "), r.stdout)
		noInvisibleRunes(t, strings.Join(args, " ")+" stderr", r.stderr)
		if !strings.Contains(r.stdout, `\u202e`) {
			t.Errorf("%s: the reason is not shown escaped:\n%s", strings.Join(args, " "), r.stdout)
		}
	}
}
