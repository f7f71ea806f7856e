package registry_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/stargazer/lifecycle/internal/redistest"
	"github.com/stargazer/lifecycle/registry"
)

// log/slog's JSON handler writes a bidi override or a zero-width space raw:
// the registry's warnings about what it read from Redis escape them.
func TestRegistryWarningsEscapeInvisibleRunesReadFromRedis(t *testing.T) {
	c := redistest.Server(t).Client(t)
	var buf strings.Builder
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	r := registry.New(c, registry.WithLogger(log))
	forge(t, c, forged{"demo", "ghost", "demo", "demo-1\u202e\u200b\u3164"}, "running")
	if _, err := r.List(t.Context(), "demo"); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "skipping an entry whose JSON names another instance") {
		t.Fatalf("no warning of the forged entry:\n%s", out)
	}
	for _, c := range []string{"\u202e", "\u200b", "\u3164"} {
		if strings.Contains(out, c) {
			t.Errorf("the warning holds the raw %+q:\n%s", c, out)
		}
	}
	if !strings.Contains(out, `demo-1\u202e\u200b\u3164`) {
		t.Errorf("the warning does not name the instance escaped:\n%s", out)
	}
}
