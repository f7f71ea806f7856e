package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/stargazer/lifecycle/cmd/sgctl/internal/visible"
)

// Everything sgctl prints that came from Redis goes through package
// visible (through cell in tables and the watch columns, through safeJSON
// with --json): the registry and the streams are writable by anyone with
// Redis access, and a terminal obeys escape sequences. The dashboard shows
// values by the same rule.
var (
	// clean writes every rune a reader cannot see (control characters,
	// bidi overrides, zero-width and other format characters, invalid
	// UTF-8) and '\' as Go escapes: visible.Clean.
	clean = visible.Clean
	// cut is clean of a value's first n characters, "…" when it was longer.
	cut = visible.Cut
	// cell is cut to maxCell characters: a table cell or a watch column.
	cell = visible.Cell
	// safeJSON escapes in JSON output what encoding/json leaves raw
	// although a reader cannot see it (DEL, C1 controls, bidi overrides and
	// the other format characters) as \u escapes: visible.JSON.
	safeJSON = visible.JSON
)

// maxCell is how many characters of a value a table cell or a watch column
// shows; --json has the whole value.
const maxCell = visible.MaxCell

// warnings is a slog handler that prints each warning of the registry
// (an entry it skipped, and why) as one line of sgctl's stderr,
// "sgctl <command>: warning: <message> key=value ...", cleaned and cut. A
// line is printed once: --wait reads the registry ten times a second.
type warnings struct {
	*warnSink
	attrs []slog.Attr
}

type warnSink struct {
	w      io.Writer
	prefix string
	mu     sync.Mutex
	seen   map[string]bool
}

// warner returns a logger whose warnings go to a's stderr, for the registry
// package.
func (a *app) warner() *slog.Logger {
	return slog.New(warnings{warnSink: &warnSink{w: a.stderr, prefix: "sgctl " + a.cmd.name + ": warning: ", seen: map[string]bool{}}})
}

// warn prints one warning line about data read from Redis; the caller
// cleans what it quotes.
func (a *app) warn(format string, args ...any) {
	fmt.Fprintf(a.stderr, "sgctl %s: warning: %s\n", a.cmd.name, fmt.Sprintf(format, args...))
}

func (h warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h warnings) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(h.prefix)
	b.WriteString(cut(r.Message, 4*maxCell))
	attr := func(a slog.Attr) bool {
		b.WriteString(" " + clean(a.Key) + "=" + cut(a.Value.String(), 4*maxCell))
		return true
	}
	for _, a := range h.attrs {
		attr(a)
	}
	r.Attrs(attr)
	b.WriteString("\n")
	line := b.String()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen[line] {
		return nil
	}
	h.seen[line] = true
	_, err := io.WriteString(h.w, line)
	return err
}

func (h warnings) WithAttrs(as []slog.Attr) slog.Handler {
	return warnings{warnSink: h.warnSink, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h warnings) WithGroup(string) slog.Handler { return h }
