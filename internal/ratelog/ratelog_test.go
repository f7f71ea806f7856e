package ratelog_test

import (
	"bytes"
	"context"
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
