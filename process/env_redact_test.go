package process

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The inputs of the report: a '%' in the password makes the URL unparsable,
// and the value used to be printed whole.
var unparsableRedisURLs = []struct{ url, shown string }{
	{"redis://user:p%ss@host:6379", "redis://xxxxx@host:6379"},
	{"redis://user:p%ss@host:6379/0?password=p%ss", "redis://xxxxx@host:6379/0?password=xxxxx"},
	{"redis://user:12#34@host:6379", "redis://xxxxx@host:6379"},
}

func TestMainReportsAnUnparsableRedisURLWithoutItsPassword(t *testing.T) {
	for _, tc := range unparsableRedisURLs {
		t.Run(tc.url, func(t *testing.T) {
			var stderr bytes.Buffer
			code := Config{Getenv: envOf(map[string]string{"REDIS_URL": tc.url}), Stderr: &stderr}.Run(context.Background(), newTestService())
			if code != ExitConfig {
				t.Fatalf("exit code %d, want %d", code, ExitConfig)
			}
			out := stderr.String()
			if !strings.Contains(out, `REDIS_URL=\"`+tc.shown+`\"`) {
				t.Errorf("message does not name REDIS_URL=%q:\n%s", tc.shown, out)
			}
			for _, secret := range []string{"p%ss", "12#34", "user:"} {
				if strings.Contains(out, secret) {
					t.Errorf("message shows %q of the URL's userinfo:\n%s", secret, out)
				}
			}
		})
	}
}
