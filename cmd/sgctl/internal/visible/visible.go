// Package visible shows text read from Redis as what it holds. Whoever can
// write to the fleet's Redis chooses the registry's values and the streams'
// fields, and a terminal obeys escape sequences, while a browser (and a
// terminal) silently reorders text around a bidi override (U+202E) or hides
// a zero-width character: HTML escaping neutralises neither. So every value
// sgctl prints and the dashboard shows goes through this package, one rule
// for both:
//
//   - Clean writes each rune a reader cannot see as what it is, a Go escape
//     (Hidden: the rule of internal/invisible, which the library's own log
//     lines follow too); Cut and Cell also bound the value's length.
//   - JSON does the same inside JSON text, where the escapes are JSON's own,
//     so the output stays valid JSON that decodes to the whole value.
//
// The dashboard's script (web/static/app.js) applies the same rule, by
// Unicode property escapes, to values that arrive live.
package visible

import (
	"unicode/utf8"

	"github.com/stargazer/lifecycle/internal/invisible"
)

// MaxCell is how many characters of a value a table cell shows (sgctl's
// tables and watch columns, the dashboard's cells): room for the longest
// instance id the lifecycle accepts (128).
const MaxCell = 128

// Ellipsis ends a value that was cut.
const Ellipsis = "…"

// Hidden reports whether r is written as an escape: invisible.Is, a rune
// outside the graphic categories (unicode.IsGraphic) or one that Unicode
// says to render as nothing. That is control characters (category Cc: C0,
// DEL and C1, among them ESC and CSI), format characters (Cf: bidi
// embeddings, overrides and isolates such as U+202E, zero-width spaces and
// joiners, the byte order mark, tag characters), line and paragraph
// separators (Zl, Zp), private-use, surrogate and unassigned code points,
// and the graphic default-ignorable ones (Hangul fillers such as U+3164,
// the combining grapheme joiner, variation selectors).
func Hidden(r rune) bool { return invisible.Is(r) }

// Clean returns s with each hidden rune written as a Go escape (\x1b, \a,
// \u009b, \u202e, \U000e0001), each byte of invalid UTF-8 as \xff, and '\'
// as \\, so that an escape in the output always stands for what s held.
// Everything else, quotes included, is left as it is. A result goes into a
// terminal as it is, and into a page through html/template, which escapes
// it for its context: Clean is about what a reader sees, not about HTML.
func Clean(s string) string { return invisible.Escape(s) }

// Cut returns Clean of the first n characters of s (runes, or bytes of
// invalid UTF-8), ending in Ellipsis when s was longer.
func Cut(s string, n int) string {
	head, cut := prefix(s, n)
	if !cut {
		return Clean(s)
	}
	return Clean(head) + Ellipsis
}

// Cell is Cut(s, MaxCell): a table cell.
func Cell(s string) string { return Cut(s, MaxCell) }

// Truncate returns the first n characters of s ending in Ellipsis when s was
// longer, not cleaned: for values that are cleaned where they are shown (the
// dashboard's JSON for its script), so that what a page receives is bounded.
func Truncate(s string, n int) string {
	head, cut := prefix(s, n)
	if !cut {
		return s
	}
	return head + Ellipsis
}

// prefix returns the first n characters of s, and whether s has more.
func prefix(s string, n int) (string, bool) {
	if len(s) <= n { // at most n bytes: at most n characters
		return s, false
	}
	i := 0
	for range n {
		if i >= len(s) {
			return s, false
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return s[:i], i < len(s)
}

// JSON returns b, JSON text (from encoding/json), with every hidden rune
// that encoding/json leaves as it is written as a \u escape: invisible.JSON.
// The output is valid JSON holding the same values, and shows a reader
// every hidden rune.
func JSON(b []byte) []byte { return invisible.JSON(b) }
