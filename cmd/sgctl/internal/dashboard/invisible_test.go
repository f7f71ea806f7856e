package dashboard

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stargazer/lifecycle/internal/redistest"
)

// invisibleText holds runes that render as nothing or reorder the text
// around them: a bidi override and isolates, a zero-width space, a byte
// order mark (Cf), a Hangul filler (graphic, default ignorable).
const invisibleText = "ok\u202e\u2066\u2069\u200b\ufeff\u3164gnp"

// The pages and the JSON the dashboard serves (for its script, and for
// whoever reads it with curl) hold no such rune raw: the JSON escapes them
// as \u escapes, so it still decodes to the whole value.
func TestTheDashboardServesNoInvisibleFormatCharacterRaw(t *testing.T) {
	rdb := redistest.Server(t).Client(t)
	r := newRig(t, rdb, nil)
	e := entry("demo", "demo-1", "running")
	e.Host, e.Version, e.Error = invisibleText, invisibleText, invisibleText
	put(t, rdb, e)
	for _, path := range []string{"/", "/instance?service=demo&id=demo-1", "/service?name=demo", "/api/fleet"} {
		res := r.get(t, path)
		if res.code != http.StatusOK {
			t.Fatalf("GET %s = %d: %s", path, res.code, res.body)
		}
		for _, c := range []string{"\u202e", "\u2066", "\u2069", "\u200b", "\ufeff", "\u3164"} {
			if strings.Contains(res.body, c) {
				t.Errorf("GET %s holds the raw %+q", path, c)
			}
		}
		if !strings.Contains(res.body, `ok\u202e\u2066\u2069\u200b\ufeff\u3164gnp`) {
			t.Errorf("GET %s does not show the host escaped", path)
		}
	}
}
