package dashboard

import (
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// clean shows s with what a reader cannot see written as Go escapes:
// control characters (ESC as \x1b), DEL, C1 controls, invalid UTF-8, bidi
// overrides and zero-width characters. html/template then escapes the
// result for its context, so '<' stays text; clean is about what an
// operator sees, not about HTML. The same rule is in app.js for values
// that arrive live.
func clean(s string) string {
	if !strings.ContainsFunc(s, hidden) && utf8.ValidString(s) {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	q = q[1 : len(q)-1]
	// QuoteToGraphic escapes '"' and '\': put back the quotes, which are
	// visible, so an ordinary value with a quote reads as typed.
	return strings.ReplaceAll(q, `\"`, `"`)
}

func hidden(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }

// unixMS is t in unix milliseconds, 0 for the zero time.
func unixMS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
