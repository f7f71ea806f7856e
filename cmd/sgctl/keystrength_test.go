package main

import (
	"strings"
	"testing"

	"github.com/stargazer/lifecycle/internal/redistest"
)

// The commands that sign (and the dashboard) warn about a control key of
// fewer than 128 bits, naming the variable, never the key.
func TestCommandsThatSignWarnAboutAWeakControlKey(t *testing.T) {
	srv := redistest.Server(t)
	const weak = "passwordpassword1234"
	for key, warn := range map[string]bool{weak: true, testKey: false} {
		r := sgctl(t, t.Context(), map[string]string{"REDIS_URL": srv.URL(), "SG_CONTROL_KEY": key}, nil, "pull", "demo")
		if got := strings.Contains(r.stderr, "sgctl pull: warning: SG_CONTROL_KEY (key id "); got != warn {
			t.Errorf("SG_CONTROL_KEY of %d bytes: warned %v, want %v:\n%s", len(key), got, warn, r.stderr)
		}
		if strings.Contains(r.stdout+r.stderr, key) {
			t.Errorf("the output shows the key:\n%s", r.stderr)
		}
	}
}
