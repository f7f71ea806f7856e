// Package invisible says which runes a reader cannot see as what they are,
// and writes them as escapes: one rule for everything the project shows of
// values read from Redis (sgctl and its dashboard through
// cmd/sgctl/internal/visible, the library's own log lines through Escape).
//
// Whoever can write to the fleet's Redis chooses the registry's values and
// the streams' fields. A terminal obeys escape sequences; a terminal and a
// browser silently reorder text around a bidi override (U+202E) and hide a
// zero-width space or a Hangul filler; and log/slog's JSON handler writes
// all of them raw. So such runes are written as Go escapes (\u202e).
package invisible

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Is reports whether r is written as an escape:
//
//   - a rune outside the graphic categories (unicode.IsGraphic: letters,
//     marks, numbers, punctuation, symbols and spaces): control characters
//     (Cc: C0, DEL and C1, among them ESC and CSI), format characters (Cf:
//     bidi embeddings, overrides and isolates U+202A-202E and U+2066-2069,
//     zero-width spaces and joiners, the soft hyphen, the byte order mark,
//     tag characters), line and paragraph separators (Zl, Zp), private-use,
//     surrogate and unassigned code points;
//   - a graphic rune that Unicode says to render as nothing
//     (Default_Ignorable_Code_Point beyond Cf: Hangul fillers such as
//     U+3164, the combining grapheme joiner U+034F, variation selectors).
func Is(r rune) bool {
	return !unicode.IsGraphic(r) ||
		unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) ||
		unicode.Is(unicode.Variation_Selector, r)
}

// Escape returns s with each rune for which Is holds written as a Go escape
// (\x1b, \u202e, \U000e0001), each byte of invalid UTF-8 as \xff, and '\' as
// \\, so that an escape in the output always stands for what s held.
// Everything else, quotes included, is left as it is.
func Escape(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(s[i])|0x100, 16)[1:])
		case r == '\\':
			b.WriteString(`\\`)
		case Is(r):
			b.WriteString(quote(r))
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// quote writes r as a Go escape. strconv leaves graphic runes as they are,
// so the default-ignorable graphic ones are written by hand.
func quote(r rune) string {
	if !unicode.IsGraphic(r) {
		q := strconv.QuoteRuneToGraphic(r) // '\x1b', '\a', '\u202e', '\U000e0001'
		return q[1 : len(q)-1]
	}
	if r > 0xffff {
		return `\U` + pad(strconv.FormatUint(uint64(r), 16), 8)
	}
	return `\u` + pad(strconv.FormatUint(uint64(r), 16), 4)
}

func pad(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return strings.Repeat("0", n-len(s)) + s
}

func needsEscape(s string) bool {
	for _, r := range s { // invalid UTF-8 comes as utf8.RuneError, which is graphic
		if r == '\\' || r == utf8.RuneError || Is(r) {
			return true
		}
	}
	return false
}

// JSON returns b, JSON text (from encoding/json), with every hidden rune
// that encoding/json leaves as it is (from DEL on: it escapes the C0
// controls, U+2028 and U+2029 itself) written as a \u escape, a surrogate
// pair beyond U+FFFF, and a byte of invalid UTF-8 as \ufffd. Outside strings
// JSON text is ASCII, so each such rune is inside a string, where the escape
// is valid and decodes to the same rune: the output is valid JSON holding
// the same values, and shows a reader every hidden rune.
func JSON(b []byte) []byte {
	clean := true
	for _, r := range string(b) {
		if r >= 0x7f && (r == utf8.RuneError || Is(r)) {
			clean = false
			break
		}
	}
	if clean {
		return b
	}
	out := make([]byte, 0, len(b)+32)
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			out = append(out, `\ufffd`...)
		case r >= 0x7f && Is(r):
			if r > 0xffff {
				hi, lo := utf16.EncodeRune(r)
				out = appendU(appendU(out, hi), lo)
			} else {
				out = appendU(out, r)
			}
		default:
			out = append(out, b[i:i+size]...)
		}
		i += size
	}
	return out
}

func appendU(out []byte, r rune) []byte {
	const hex = "0123456789abcdef"
	return append(out, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
}

// Text is a string read from Redis, for a log attribute: each slog handler
// shows it escaped once. log/slog's JSON handler writes it through
// MarshalJSON (JSON's own \u escapes, so the line decodes to the value), its
// text handler through MarshalText (Escape), and a handler that formats it
// with fmt (as sgctl's own, which cleans what it prints) gets the raw value
// from String.
type Text string

// String returns the raw value.
func (t Text) String() string { return string(t) }

// MarshalText returns Escape of the value.
func (t Text) MarshalText() ([]byte, error) { return []byte(Escape(string(t))), nil }

// MarshalJSON returns the value as a JSON string, escaped by JSON.
func (t Text) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(string(t))
	return JSON(b), err
}
