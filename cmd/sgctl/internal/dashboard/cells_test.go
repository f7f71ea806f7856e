package dashboard

import (
	"net/http"
	"strings"
	"testing"
)

// Issue 19, item 4: a cell of the fleet and service pages is cut at 128
// characters (as sgctl ps cuts it) and escaped, and the instance page holds
// the whole value, escaped: markup in a registry value is text everywhere.
func TestACellIsCutAt128AndEscapedAndTheInstancePageHoldsItWhole(t *testing.T) {
	r := redisRig(t, nil)
	e := entry("demo", "demo-1", "running")
	e.Version = strings.Repeat("<b>v</b>", 40) + "<i>END</i>" // 330 characters of markup
	put(t, r.rdb, e)
	cut := strings.ReplaceAll(strings.ReplaceAll(e.Version[:128], "<", "&lt;"), ">", "&gt;") + "…"
	for _, path := range []string{"/", "/service?name=demo"} {
		res := r.get(t, path)
		if res.code != http.StatusOK {
			t.Fatalf("GET %s = %d", path, res.code)
		}
		if !strings.Contains(res.body, `<td class="version">`+cut+`</td>`) {
			t.Errorf("GET %s: the version cell is not the first 128 characters, escaped, and an ellipsis", path)
		}
		if strings.Contains(res.body, "<b>v") || strings.Contains(res.body, "END") {
			t.Errorf("GET %s holds the markup raw or past the cut", path)
		}
	}
	res := r.get(t, "/instance?service=demo&id=demo-1")
	if res.code != http.StatusOK || strings.Contains(res.body, "<b>v") || strings.Contains(res.body, "<i>END") {
		t.Fatalf("GET /instance = %d, markup raw: %v", res.code, strings.Contains(res.body, "<b>v"))
	}
	whole := strings.Repeat(`\u003cb\u003ev\u003c/b\u003e`, 40) + `\u003ci\u003eEND\u003c/i\u003e`
	if !strings.Contains(res.body, whole) {
		t.Errorf("the instance page does not hold the whole version, escaped")
	}
}
