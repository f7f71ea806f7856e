package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// Everything sgctl prints that came from Redis goes through clean (through
// cell in tables and the watch columns, through safeJSON with --json): the
// registry and the streams are writable by anyone with Redis access, and a
// terminal obeys escape sequences.

// clean returns s with every byte a terminal might act on written as a Go
// escape: control characters (ESC as \x1b, C1 controls such as CSI as
// \u009b), DEL, invalid UTF-8 (\xff), and the non-printing runes that change
// how text reads (bidi overrides as \u202e, zero-width characters), plus '"'
// and '\' so that the result is unambiguous. It is strconv.Quote without
// the quotes.
func clean(s string) string {
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// maxCell is how many characters of a value a table cell or a watch column
// shows: room for the longest instance id the lifecycle accepts (128).
const maxCell = 128

// ellipsis marks a value cut short; --json has the whole value.
const ellipsis = "…"

// cell is clean(s) with s cut to maxCell characters, ending in an ellipsis
// when it was longer.
func cell(s string) string { return cut(s, maxCell) }

// cut is clean(s) with s cut to n characters (runes, or bytes of invalid
// UTF-8), ending in an ellipsis when it was longer.
func cut(s string, n int) string {
	i := 0
	for range n {
		if i >= len(s) {
			return clean(s)
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	if i >= len(s) {
		return clean(s)
	}
	return clean(s[:i]) + ellipsis
}

// safeJSON escapes in JSON output what encoding/json leaves raw although a
// terminal may act on it: DEL (U+007F) and the C1 controls (U+0080-U+009F,
// among them CSI). Outside strings JSON is ASCII punctuation, digits and
// letters, so each such rune is inside a string, where \u escapes are valid.
func safeJSON(b []byte) []byte {
	if !strings.ContainsFunc(string(b), isC1OrDEL) {
		return b
	}
	var out strings.Builder
	for _, r := range string(b) {
		if isC1OrDEL(r) {
			fmt.Fprintf(&out, `\u%04x`, r)
			continue
		}
		out.WriteRune(r)
	}
	return []byte(out.String())
}

func isC1OrDEL(r rune) bool { return r >= 0x7f && r <= 0x9f }

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
