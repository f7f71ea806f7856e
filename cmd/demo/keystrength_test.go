package main

import (
	"strings"
	"syscall"
	"testing"

	"github.com/stargazer/lifecycle/internal/redistest"
)

// Any 16 bytes were accepted as SG_CONTROL_KEY without a word. A key of
// fewer than 128 bits (by its alphabet, or its hex or base64 encoding)
// warns at boot, naming the variable and the key's id, never the key.
func TestAWeakControlKeyWarnsAtBootNamingTheVariableNeverTheKey(t *testing.T) {
	srv := redistest.Server(t)
	const weak = "passwordpassword1234"
	for _, tc := range []struct {
		key  string
		warn bool
	}{
		{weak, true},
		{"0123456789abcdef0123456789abcdef", false},        // 32 hex digits: 128 bits
		{"q8ZyJ1vXhYF0o3c9mR2tWk5nLb7dPs4G", false},        // 32 base64 characters: 192 bits
		{"q8ZyJ1vXhYF0o3c9mR2tWk5nLb7dPs4G," + weak, true}, // rotation: the old key is weak
		{"0123456789abcdef0123456789abcde", true},          // 31 hex digits: 124 bits
	} {
		p := startDemo(t, "REDIS_URL="+srv.URL(), "SG_CONTROL_KEY="+tc.key, "SG_SERVICE_NAME=demo", "SG_INSTANCE_ID=demo-1", "SG_HEALTH_HOST=127.0.0.1")
		p.WaitFor(t, "boot completed")
		_ = p.Signal(syscall.SIGTERM)
		if code := p.Wait(t); code != 0 {
			t.Errorf("SG_CONTROL_KEY of %d bytes: exit %d, want 0 (a warning, not an error)", len(tc.key), code)
		}
		out := p.Output()
		if got := strings.Contains(out, "weak control key: SG_CONTROL_KEY"); got != tc.warn {
			t.Errorf("SG_CONTROL_KEY of %d bytes: warned %v, want %v:\n%s", len(tc.key), got, tc.warn, out)
		}
		for _, part := range strings.Split(tc.key, ",") {
			if strings.Contains(out, part) {
				t.Errorf("the output shows the key:\n%s", out)
			}
		}
	}
}
