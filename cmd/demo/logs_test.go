package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stargazer/lifecycle/controlops"
)

// Every line the demo writes through a boot on its embedded Redis, a pull op
// and a SIGTERM is one record of slog's text format, names each key once (a
// logger that already carries service and instance must not be given them
// again) and puts an error under "error", never "err".
func TestDemoLogLinesParseAndNameEachKeyOnceAndErrorsUnderError(t *testing.T) {
	p := startDemo(t)
	addr := p.WaitForMatch(t, embeddedAddr)[1]
	p.WaitFor(t, "boot completed")
	instance := mustInstance(t, p.Output())

	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	ops := controlops.NewClient(rdb, nil) // the embedded Redis takes unsigned ops
	op, err := ops.Send(ctx, "demo", controlops.OpPull, instance, nil)
	if err != nil {
		t.Fatal(err)
	}
	final, err := ops.Wait(ctx, "demo", op, nil, nil)
	if err != nil || final[instance].Status != controlops.StatusDone {
		t.Fatalf("pull: %+v %v, want done", final[instance], err)
	}
	p.WaitFor(t, `msg="demo: settings re-read"`)

	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(t); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}

	out := p.Output()
	for _, want := range []string{`msg="boot completed"`, "to=pulling event=pull", `msg="demo: settings re-read"`, "to=stopped event=cleaned_up"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %q: the run did not cover what it should", want)
		}
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for i, line := range lines {
		kvs, err := parseLogLine(line)
		if err != nil {
			t.Errorf("line %d does not parse (%v): %s", i+1, err, line)
			continue
		}
		if len(kvs) < 3 || kvs[0].key != "time" || kvs[1].key != "level" || kvs[2].key != "msg" {
			t.Errorf("line %d does not begin with time, level and msg: %s", i+1, line)
		}
		seen := map[string]bool{}
		for _, kv := range kvs {
			if seen[kv.key] {
				t.Errorf("line %d names %q twice: %s", i+1, kv.key, line)
			}
			seen[kv.key] = true
			if kv.key == "err" {
				t.Errorf(`line %d puts an error under "err", not "error": %s`, i+1, line)
			}
		}
	}
	t.Logf("%d lines checked", len(lines))
}

type logKV struct{ key, value string }

// parseLogLine splits a line of slog's TextHandler into its pairs: key=value,
// one space between pairs; a key or a value is quoted (Go syntax) when it is
// empty or holds a space, '=', '"' or a character that is not printable, and
// is bare otherwise.
func parseLogLine(line string) ([]logKV, error) {
	var kvs []logKV
	rest := line
	at := func() int { return len(line) - len(rest) }
	for {
		key, r, err := logToken(rest)
		if err != nil {
			return nil, fmt.Errorf("key at byte %d: %w", at(), err)
		}
		if key == "" || !strings.HasPrefix(r, "=") {
			return nil, fmt.Errorf("byte %d: want key=value", at())
		}
		rest = r[1:]
		value, r, err := logToken(rest)
		if err != nil {
			return nil, fmt.Errorf("value of %s at byte %d: %w", key, at(), err)
		}
		kvs = append(kvs, logKV{key, value})
		rest = r
		if rest == "" {
			return kvs, nil
		}
		if rest[0] != ' ' || len(rest) == 1 {
			return nil, fmt.Errorf("byte %d: want one space and the next pair", at())
		}
		rest = rest[1:]
	}
}

// logToken reads a key or a value at the start of s and returns it unquoted
// with what follows it.
func logToken(s string) (token, rest string, err error) {
	if strings.HasPrefix(s, `"`) {
		q, err := strconv.QuotedPrefix(s)
		if err != nil {
			return "", "", fmt.Errorf("bad quoting: %w", err)
		}
		token, _ = strconv.Unquote(q)
		return token, s[len(q):], nil
	}
	end := strings.IndexAny(s, " =")
	if end < 0 {
		end = len(s)
	}
	token = s[:end]
	if token == "" {
		return "", "", errors.New("empty and not quoted")
	}
	if strings.Contains(token, `"`) {
		return "", "", fmt.Errorf("%q holds a quote and is not quoted", token)
	}
	return token, s[end:], nil
}

func TestParseLogLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []logKV // nil: must not parse
	}{
		{`time=2025-01-02T03:04:05.000Z level=INFO msg="boot started" service=demo`,
			[]logKV{{"time", "2025-01-02T03:04:05.000Z"}, {"level", "INFO"}, {"msg", "boot started"}, {"service", "demo"}}},
		{`a="x=\"y\"\n" "odd key"=1 g.k=""`, []logKV{{"a", "x=\"y\"\n"}, {"odd key", "1"}, {"g.k", ""}}},
		{`a=1`, []logKV{{"a", "1"}}},
		{``, nil},
		{`a=`, nil},
		{`a= b=1`, nil},
		{`a=1  b=2`, nil},
		{`a=1 `, nil},
		{`a=b"c`, nil},
		{`a="unterminated`, nil},
		{`just words`, nil},
		{`=1`, nil},
		{`a=1=2`, nil},
	} {
		got, err := parseLogLine(tc.line)
		if tc.want == nil {
			if err == nil {
				t.Errorf("%q parsed as %q, want an error", tc.line, got)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%q: %q %v, want %q", tc.line, got, err, tc.want)
		}
	}
}
