package visible_test

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/cmd/sgctl/internal/visible"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCleanWritesWhatAReaderCannotSeeAsEscapes(t *testing.T) {
	for in, want := range map[string]string{
		"h1":                   "h1",
		"naïve-ホスト":            "naïve-ホスト",
		`q"b'`:                 `q"b'`, // visible: left as typed
		`back\slash`:           `back\\slash`,
		"\x1b[31mred\x1b[0m":   `\x1b[31mred\x1b[0m`,
		"bell\a\x7f":           `bell\a\x7f`,
		"\u009b2J":             `\u009b2J`,
		"a\u202eb":             `a\u202eb`,      // right-to-left override
		"\u2066x\u2069":        `\u2066x\u2069`, // left-to-right isolate, pop
		"zero\u200bwidth":      `zero\u200bwidth`,
		"\ufeffbom":            `\ufeffbom`,
		"tag\U000e0041":        `tag\U000e0041`,
		"line\u2028para\u2029": `line\u2028para\u2029`,
		"bad\xffutf8":          `bad\xffutf8`,
		"tab\tnl\n":            `tab\tnl\n`,
		"nbsp\u00a0space":      "nbsp\u00a0space", // a space, visible as one
	} {
		if got := visible.Clean(in); got != want {
			t.Errorf("Clean(%q) = %s, want %s", in, got, want)
		}
	}
}

// The rule is the Unicode tables', not a list: every format character
// (category Cf, the bidi controls among them) and every control (Cc, C0
// and C1) is escaped, and no graphic character is.
func TestEveryFormatAndControlCharacterIsHiddenAndNoGraphicOneIs(t *testing.T) {
	n := 0
	for _, tab := range []*unicode.RangeTable{unicode.Cf, unicode.Cc, unicode.Zl, unicode.Zp} {
		for r := range runesOf(tab) {
			n++
			s := "a" + string(r) + "b"
			if got := visible.Clean(s); strings.ContainsRune(got, r) || !strings.HasPrefix(got, `a\`) {
				t.Errorf("Clean(%U) = %q: not escaped", r, got)
			}
			if got := visible.JSON([]byte(`"` + string(r) + `"`)); r >= 0x7f && strings.ContainsRune(string(got), r) {
				t.Errorf("JSON(%U) = %q: not escaped", r, got)
			}
		}
	}
	if n < 200 {
		t.Fatalf("only %d format and control characters tried", n)
	}
	// Graphic characters are shown, except those Unicode says to render as
	// nothing (default ignorable: Hangul fillers, the combining grapheme
	// joiner, variation selectors), which are escaped as well.
	ignorable := []*unicode.RangeTable{unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector}
	for _, tab := range []*unicode.RangeTable{unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Zs} {
		for r := range runesOf(tab) {
			if got := visible.Hidden(r); got != unicode.In(r, ignorable...) {
				t.Fatalf("Hidden(%U) = %v for a graphic character", r, got)
			}
		}
	}
	for _, r := range []rune{0x3164, 0x115f, 0x1160, 0xffa0, 0x034f, 0xfe0f, 0xe0100} {
		s := "a" + string(r) + "b"
		if got := visible.Clean(s); strings.ContainsRune(got, r) || !strings.HasPrefix(got, `a\`) {
			t.Errorf("Clean(%U) = %q: not escaped", r, got)
		}
		if got := visible.JSON([]byte(`"` + string(r) + `"`)); strings.ContainsRune(string(got), r) {
			t.Errorf("JSON(%U) = %q: not escaped", r, got)
		}
	}
}

func runesOf(tab *unicode.RangeTable) func(func(rune) bool) {
	return func(yield func(rune) bool) {
		for _, r16 := range tab.R16 {
			for r := rune(r16.Lo); r <= rune(r16.Hi); r += rune(r16.Stride) {
				if !yield(r) {
					return
				}
			}
		}
		for _, r32 := range tab.R32 {
			for r := rune(r32.Lo); r <= rune(r32.Hi); r += rune(r32.Stride) {
				if !yield(r) {
					return
				}
			}
		}
	}
}

func TestCellCutsAt128CharactersWithAnEllipsis(t *testing.T) {
	long := strings.Repeat("ホ", visible.MaxCell+1)
	if got := visible.Cell(long); got != strings.Repeat("ホ", visible.MaxCell)+"…" {
		t.Errorf("Cell of %d runes = %d runes, want %d and an ellipsis", visible.MaxCell+1, utf8.RuneCountInString(got), visible.MaxCell)
	}
	if got := visible.Cell(strings.Repeat("x", visible.MaxCell)); got != strings.Repeat("x", visible.MaxCell) {
		t.Errorf("Cell cut a value of exactly %d characters", visible.MaxCell)
	}
	// Cut counts what s holds, then escapes: 128 characters of a hostile
	// value show as their escapes, whole.
	if got := visible.Cell(strings.Repeat("\u202e", 200)); got != strings.Repeat(`\u202e`, visible.MaxCell)+"…" {
		t.Errorf("Cell of 200 bidi overrides = %q", got)
	}
	if got := visible.Truncate(strings.Repeat("h", 15<<20), visible.MaxCell); got != strings.Repeat("h", visible.MaxCell)+"…" {
		t.Errorf("Truncate of 15 MB = %d bytes", len(got))
	}
	if got := visible.Truncate("a\u202eb", visible.MaxCell); got != "a\u202eb" {
		t.Errorf("Truncate cleaned a short value: %q", got)
	}
}

func TestJSONStaysValidAndEscapesHiddenRunes(t *testing.T) {
	in := map[string]string{"host": "a\u202eb\u009b\x7f\u200b\U000e0041\x1b", "plain": "naïve \"q\" \\"}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	got := visible.JSON(raw)
	for _, r := range []rune{0x202e, 0x9b, 0x7f, 0x200b, 0xe0041, 0x1b} {
		if strings.ContainsRune(string(got), r) {
			t.Errorf("JSON left %U raw: %s", r, got)
		}
	}
	for _, want := range []string{`\u202e`, `\u009b`, `\u007f`, `\u200b`, `\udb40\udc41`, `\u001b`} {
		if !strings.Contains(string(got), want) {
			t.Errorf("JSON lacks %s: %s", want, got)
		}
	}
	var back map[string]string
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatalf("JSON output is not JSON: %v\n%s", err, got)
	}
	if back["host"] != in["host"] || back["plain"] != in["plain"] {
		t.Errorf("JSON changed the values: %q, want %q", back, in)
	}
	if plain := []byte(`{"a":"naïve ホ"}`); string(visible.JSON(plain)) != string(plain) {
		t.Errorf("JSON changed text without hidden runes")
	}
}
