package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/phases"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(proctest.Main(m))
}

// syncBuffer is a bytes.Buffer safe to write from run's goroutine while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// result is one finished sgctl invocation.
type result struct {
	code           int
	stdout, stderr string
}

// sgctl runs the CLI in-process with env as its whole environment and now
// as its clock (time.Now when nil).
func sgctl(t *testing.T, ctx context.Context, env map[string]string, now func() time.Time, args ...string) result {
	t.Helper()
	var stdout, stderr syncBuffer
	a := newTestApp(env, now, &stdout, &stderr)
	code := a.main(ctx, args)
	t.Logf("sgctl %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return result{code, stdout.String(), stderr.String()}
}

func newTestApp(env map[string]string, now func() time.Time, stdout, stderr *syncBuffer) *app {
	if now == nil {
		now = time.Now
	}
	return &app{getenv: func(k string) string { return env[k] }, stdout: stdout, stderr: stderr, now: now, table: phases.Lifecycle()}
}

// eventually polls cond every few milliseconds until it holds or timeout
// passes. The sleep is the polling interval, bounded by the deadline.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", timeout, what())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunWithoutArgumentsPrintsUsageAndExits2(t *testing.T) {
	r := sgctl(t, t.Context(), nil, nil)
	if r.code != exitUsage {
		t.Fatalf("exit code %d, want %d", r.code, exitUsage)
	}
	if !strings.Contains(r.stderr, "Usage:") || !strings.Contains(r.stderr, "restart") {
		t.Fatalf("stderr does not show the usage with the commands:\n%s", r.stderr)
	}
}

func TestHelpListsEveryCommandAndTheExitCodes(t *testing.T) {
	for _, arg := range []string{"--help", "-h", "help"} {
		r := sgctl(t, t.Context(), nil, nil, arg)
		if r.code != exitOK {
			t.Fatalf("%s: exit code %d, want 0", arg, r.code)
		}
		for _, want := range []string{"ps", "watch", "restart", "pull", "drain", "undrain", "diagram", "REDIS_URL", "SG_CONTROL_KEY", "3  Redis unreachable"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%s: usage lacks %q", arg, want)
			}
		}
	}
}

func TestEveryCommandHasHelpWithItsSynopsisAndFlags(t *testing.T) {
	wantFlags := map[string][]string{
		"ps":        {"--json", "--ttl"},
		"watch":     {"--json", "--instance", "--from"},
		"restart":   {"--instance", "--max-unavailable", "--wait", "--timeout"},
		"pull":      {"--instance", "--wait", "--timeout"},
		"drain":     {"--instance", "--wait", "--timeout"},
		"undrain":   {"--instance", "--wait", "--timeout"},
		"diagram":   {"--format", "--highlight"},
		"dashboard": {"--listen", "--read-only", "--ttl"},
	}
	for _, c := range commands {
		for _, args := range [][]string{{c.name, "--help"}, {c.name, "-h"}, {"help", c.name}} {
			r := sgctl(t, t.Context(), nil, nil, args...)
			if r.code != exitOK {
				t.Fatalf("%q: exit code %d, want 0", args, r.code)
			}
			if !strings.Contains(r.stdout, "sgctl "+c.name) {
				t.Errorf("%q: help lacks the synopsis %q", args, "sgctl "+c.name)
			}
			for _, f := range wantFlags[c.name] {
				if !strings.Contains(r.stdout, f) {
					t.Errorf("%q: help lacks flag %s", args, f)
				}
			}
		}
	}
	if len(wantFlags) != len(commands) {
		t.Errorf("test covers %d commands, sgctl has %d", len(wantFlags), len(commands))
	}
}

func TestUnknownCommandExits2NamingIt(t *testing.T) {
	r := sgctl(t, t.Context(), nil, nil, "restrat", "demo")
	if r.code != exitUsage || !strings.Contains(r.stderr, `unknown command "restrat"`) {
		t.Fatalf("got %d %q, want exit 2 naming the command", r.code, r.stderr)
	}
}

func TestBadFlagExits2NamingTheFlagAsTyped(t *testing.T) {
	for _, c := range commands {
		r := sgctl(t, t.Context(), nil, nil, c.name, "demo", "--bogus")
		if r.code != exitUsage {
			t.Errorf("%s: exit code %d, want 2", c.name, r.code)
		}
		if !strings.Contains(r.stderr, "--bogus") || !strings.Contains(r.stderr, "sgctl "+c.name+" --help") {
			t.Errorf("%s: stderr %q does not name --bogus and point to --help", c.name, r.stderr)
		}
	}
}

func TestBadFlagValuesExit2NamingFlagAndValue(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ps", "--ttl", "soon"}, `"soon" for flag --ttl`},
		{[]string{"ps", "--ttl", "-1s"}, `"-1s" for flag --ttl`},
		{[]string{"watch", "--from", "yesterday"}, `"yesterday" for flag --from`},
		{[]string{"watch", "--instance", "i-1"}, `--instance "i-1" needs a SERVICE`},
		{[]string{"restart", "demo", "--timeout", "0s"}, `"0s" for flag --timeout`},
		{[]string{"restart", "demo", "--max-unavailable", "-1"}, `-1 for flag --max-unavailable`},
		{[]string{"restart", "demo", "--instance", "bad id"}, `"bad id" for flag --instance`},
		{[]string{"restart"}, "missing SERVICE"},
		{[]string{"pull", "Demo{x}"}, `service "Demo{x}"`},
		{[]string{"ps", "a", "b"}, "too many arguments"},
		{[]string{"diagram", "--format", "png"}, `"png" for flag --format`},
		{[]string{"diagram", "--highlight", "sleeping"}, `"sleeping" for flag --highlight`},
	} {
		r := sgctl(t, t.Context(), nil, nil, tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%q: got %d %q, want exit 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}

func TestFlagsAfterTheServiceArgumentAreParsed(t *testing.T) {
	// "demo" before "--timeout": the flag package alone would stop at "demo"
	// and take "--timeout" as a second argument.
	r := sgctl(t, t.Context(), nil, nil, "restart", "demo", "--timeout", "0s")
	if r.code != exitUsage || !strings.Contains(r.stderr, "--timeout") || strings.Contains(r.stderr, "too many arguments") {
		t.Fatalf("got %d %q, want the --timeout value rejected", r.code, r.stderr)
	}
}

func TestInvalidRedisURLExits2NamingTheVariable(t *testing.T) {
	env := map[string]string{"REDIS_URL": "http://127.0.0.1:6379"}
	for _, cmd := range []string{"ps", "watch"} {
		r := sgctl(t, t.Context(), env, nil, cmd)
		if r.code != exitUsage || !strings.Contains(r.stderr, `REDIS_URL="http://127.0.0.1:6379"`) {
			t.Errorf("%s: got %d %q, want exit 2 naming REDIS_URL and its value", cmd, r.code, r.stderr)
		}
	}
}

// A '%' in the password makes the URL unparsable; it used to be printed whole.
func TestUnparsableRedisURLIsReportedWithoutItsPassword(t *testing.T) {
	for _, url := range []string{"redis://user:p%ss@host:6379", "redis://user:12#34@host:6379/0?password=p%ss"} {
		for _, cmd := range [][]string{{"ps"}, {"watch"}, {"restart", "demo"}} {
			r := sgctl(t, t.Context(), map[string]string{"REDIS_URL": url}, nil, cmd...)
			if r.code != exitUsage || !strings.Contains(r.stderr, `REDIS_URL="redis://xxxxx@host:6379`) {
				t.Errorf("%s %v: got %d %q, want exit 2 naming REDIS_URL with its userinfo masked", url, cmd, r.code, r.stderr)
			}
			for _, secret := range []string{"p%ss", "12#34", "user:"} {
				if strings.Contains(r.stderr+r.stdout, secret) {
					t.Errorf("%s %v: output shows %q of the userinfo: %q", url, cmd, secret, r.stderr)
				}
			}
		}
	}
}

// A Sentinel URL that cannot work exits 2 naming what is wrong, with the
// Sentinels' and the master's passwords masked.
func TestBadSentinelRedisURLExits2NamingTheProblemWithoutPasswords(t *testing.T) {
	for url, want := range map[string]string{
		"redis://:s3ntinel@sentinel/0?master_name=mymaster&password=m4ster":               `the Sentinel "sentinel" has no port`,
		"redis://:s3ntinel@sentinel:26379/0?master_name=&password=m4ster":                 "master_name= must be given once, not empty",
		"redis://sentinel:26379/0?master_name=mymaster&sentinel_password=s3ntinel":        "the Sentinels' user and password go before the host",
		"redis://:s3ntinel@sentinel:26379/0?master_name=mymaster&password=m4ster&addr=s2": "does not parse from its password parameter on",
	} {
		r := sgctl(t, t.Context(), map[string]string{"REDIS_URL": url}, nil, "ps")
		if r.code != exitUsage || !strings.Contains(r.stderr, "invalid configuration: REDIS_URL=") || !strings.Contains(r.stderr, want) {
			t.Errorf("%s: got %d %q, want exit 2 naming REDIS_URL and saying %q", url, r.code, r.stderr, want)
		}
		for _, secret := range []string{"s3ntinel", "m4ster"} {
			if strings.Contains(r.stderr+r.stdout, secret) {
				t.Errorf("%s: output shows %q: %q", url, secret, r.stderr)
			}
		}
	}
}

func TestShortControlKeyFailsOnlyTheCommandsThatSign(t *testing.T) {
	t.Parallel() // ps waits out the dial retries to 127.0.0.1:1
	env := map[string]string{"REDIS_URL": "redis://127.0.0.1:1", "SG_CONTROL_KEY": "short"}
	r := sgctl(t, t.Context(), env, nil, "pull", "demo")
	if r.code != exitUsage || !strings.Contains(r.stderr, "SG_CONTROL_KEY") || strings.Contains(r.stderr, "short") {
		t.Errorf("pull: got %d %q, want exit 2 naming SG_CONTROL_KEY without printing the key", r.code, r.stderr)
	}
	r = sgctl(t, t.Context(), env, nil, "ps")
	if r.code != exitUnreachable {
		t.Errorf("ps: exit code %d, want %d: ps does not use the key", r.code, exitUnreachable)
	}
}

func TestUnreachableRedisExits3NamingTheAddress(t *testing.T) {
	env := map[string]string{"REDIS_URL": "redis://:secret@127.0.0.1:1/0"}
	// In parallel: each waits out the client's dial retries (about 1.5s).
	for _, args := range [][]string{{"ps"}, {"ps", "demo"}, {"watch"}, {"restart", "demo"}, {"pull", "demo"}} {
		t.Run(strings.Join(args, "_"), func(t *testing.T) {
			t.Parallel()
			r := sgctl(t, t.Context(), env, nil, args...)
			if r.code != exitUnreachable {
				t.Errorf("exit code %d, want %d", r.code, exitUnreachable)
			}
			if !strings.Contains(r.stderr, "cannot reach Redis at 127.0.0.1:1") {
				t.Errorf("stderr %q does not name the address", r.stderr)
			}
			if strings.Contains(r.stderr, "secret") {
				t.Errorf("stderr %q shows the password", r.stderr)
			}
		})
	}
}
