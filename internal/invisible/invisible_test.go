package invisible

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEscapeWritesEveryRuneAReaderCannotSeeAsAnEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain host-1.example": "plain host-1.example",
		"a\u202eb":             `a\u202eb`,      // right-to-left override (Cf)
		"a\u200bb":             `a\u200bb`,      // zero-width space (Cf)
		"\u2066x\u2069":        `\u2066x\u2069`, // isolates (Cf)
		"\u00ad":               `\u00ad`,        // soft hyphen (Cf)
		"\ufeff":               `\ufeff`,        // byte order mark (Cf)
		"\U000e0041":           `\U000e0041`,    // tag (Cf)
		"\x1b[31m":             `\x1b[31m`,      // ESC (Cc)
		"\u2028":               `\u2028`,        // line separator (Zl)
		"a\u3164b":             `a\u3164b`,      // Hangul filler (Lo, default ignorable)
		"\u115f\u1160\uffa0":   `\u115f\u1160\uffa0`,
		"e\u034f":              `e\u034f`,    // combining grapheme joiner (Mn, default ignorable)
		"\ufe0f":               `\ufe0f`,     // variation selector
		"\U000e0100":           `\U000e0100`, // variation selector supplement
		`a\u202e`:              `a\\u202e`,   // a backslash cannot forge an escape
		"\xff":                 `\xff`,
		"ünïcödé ✓ 日本":         "ünïcödé ✓ 日本",
	} {
		if got := Escape(in); got != want {
			t.Errorf("Escape(%+q) = %s, want %s", in, got, want)
		}
	}
}

func TestTextIsEscapedOnceByEachSlogHandler(t *testing.T) {
	var jb, tb strings.Builder
	slog.New(slog.NewJSONHandler(&jb, nil)).Warn("m", "host", Text("h\u202e\u3164\x1b"))
	slog.New(slog.NewTextHandler(&tb, nil)).Warn("m", "host", Text("h\u202e\u3164\x1b"))
	if !strings.Contains(jb.String(), `"host":"h\u202e\u3164\u001b"`) {
		t.Errorf("JSON handler: %s", jb.String())
	}
	if !strings.Contains(tb.String(), `host=h\u202e\u3164\x1b`) {
		t.Errorf("text handler: %s", tb.String())
	}
	if got := fmt.Sprint(Text("h\u202e")); got != "h\u202e" {
		t.Errorf("String = %+q, want the raw value (for a handler that cleans it itself)", got)
	}
}
