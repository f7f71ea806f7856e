package ratelog_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/internal/ratelog"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFirstLineAtOnceThenAtMostOneAMinuteCountingTheRest(t *testing.T) {
	var buf bytes.Buffer
	clk := clockwork.NewFakeClock()
	l := ratelog.New(slog.New(slog.NewTextHandler(&buf, nil)), clk, time.Minute)
	ctx := context.Background()
	wrote := 0
	for range 57 { // one failed dial every 140ms for 8s, as measured in the report
		if l.Log(ctx, slog.LevelWarn, "dial failed") {
			wrote++
		}
		clk.Advance(140 * time.Millisecond)
	}
	if wrote != 1 {
		t.Fatalf("%d lines written in 8s, want 1", wrote)
	}
	clk.Advance(time.Minute)
	if !l.Log(ctx, slog.LevelWarn, "dial failed") {
		t.Fatal("no line a minute after the first")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || strings.Contains(lines[0], "suppressed") || !strings.Contains(lines[1], "suppressed=56") {
		t.Fatalf("lines:\n%s\nwant the first without a count and the second with suppressed=56", buf.String())
	}
	if !strings.Contains(lines[0], "level=WARN") {
		t.Errorf("line %q not at the level asked for", lines[0])
	}
}

func TestResetWritesTheNextFailureAtOnceAndReturnsTheCount(t *testing.T) {
	var buf bytes.Buffer
	clk := clockwork.NewFakeClock()
	l := ratelog.New(slog.New(slog.NewTextHandler(&buf, nil)), clk, time.Minute)
	ctx := context.Background()
	l.Log(ctx, slog.LevelWarn, "a")
	l.Log(ctx, slog.LevelWarn, "a")
	l.Log(ctx, slog.LevelWarn, "a")
	if n := l.Reset(); n != 2 {
		t.Errorf("Reset = %d, want 2 left out", n)
	}
	if !l.Log(ctx, slog.LevelWarn, "b") {
		t.Error("first line after Reset was left out")
	}
	if strings.Contains(buf.String(), "suppressed") {
		t.Errorf("count carried over a Reset:\n%s", buf.String())
	}
}

func TestKeyedAllowsEachKeyOnceAMinuteCountingTheRest(t *testing.T) {
	clk := clockwork.NewFakeClock()
	k := ratelog.NewKeyed(clk, time.Minute, 8)
	for _, key := range []string{"a", "b"} {
		if ok, n := k.Allow(key); !ok || n != 0 {
			t.Fatalf("first line about %s: Allow = %v, %d; want true, 0", key, ok, n)
		}
	}
	for range 5 {
		clk.Advance(5 * time.Second)
		if ok, _ := k.Allow("a"); ok {
			t.Fatalf("a line about a allowed %v after the last", 5*time.Second)
		}
	}
	if ok, _ := k.Allow("b"); ok {
		t.Fatal("a second line about b allowed within the minute")
	}
	clk.Advance(time.Minute)
	if ok, n := k.Allow("a"); !ok || n != 5 {
		t.Errorf("a minute later: Allow(a) = %v, %d; want true and the 5 left out", ok, n)
	}
	if ok, n := k.Allow("b"); !ok || n != 1 {
		t.Errorf("a minute later: Allow(b) = %v, %d; want true and the 1 left out", ok, n)
	}
}

// Whoever writes the keys cannot grow the memory: past the bound, new keys
// share one budget until old keys age out.
func TestKeyedRemembersABoundedNumberOfKeys(t *testing.T) {
	clk := clockwork.NewFakeClock()
	k := ratelog.NewKeyed(clk, time.Minute, 4)
	allowed := 0
	for i := range 10000 {
		if ok, _ := k.Allow(fmt.Sprint("key-", i)); ok {
			allowed++
		}
	}
	// 4 keys of their own, then one line for all the others.
	if allowed != 5 {
		t.Errorf("%d lines allowed for 10000 keys within a minute, want 5", allowed)
	}
	if ok, _ := k.Allow("key-0"); ok {
		t.Error("a remembered key allowed twice within the minute")
	}
	clk.Advance(time.Minute)
	if ok, _ := k.Allow("new"); !ok {
		t.Error("a new key not allowed once the old ones aged out")
	}
	if ok, _ := k.Allow("new"); ok {
		t.Error("the new key is not remembered")
	}
}
