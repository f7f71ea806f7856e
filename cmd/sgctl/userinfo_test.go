package main

import (
	"strings"
	"testing"

	"github.com/stargazer/lifecycle/internal/redistest"
)

// A password put in the user's place of REDIS_URL ("redis://s3cret@host")
// was printed by sgctl's errors as a user name. Neither an invalid URL's
// exit-2 message nor the error of a Redis that refuses the connection
// shows it.
func TestSgctlNeverPrintsAPasswordInTheUserPlaceOfRedisURL(t *testing.T) {
	const secret = "s3cretUserPlace"
	for _, url := range []string{"http://" + secret + "@127.0.0.1:6379", "redis://" + secret + "@127.0.0.1:bad%zz/0"} {
		for _, cmd := range [][]string{{"ps"}, {"watch"}, {"restart", "demo"}} {
			r := sgctl(t, t.Context(), map[string]string{"REDIS_URL": url}, nil, cmd...)
			if r.code != exitUsage || !strings.Contains(r.stderr, "REDIS_URL=") || !strings.Contains(r.stderr, "xxxxx@127.0.0.1") {
				t.Errorf("%s %v: exit %d %q, want 2 naming REDIS_URL with its userinfo masked", url, cmd, r.code, r.stderr)
			}
			if strings.Contains(r.stdout+r.stderr, secret) {
				t.Errorf("%s %v: the output shows the userinfo: %q", url, cmd, r.stderr)
			}
		}
	}

	// A server that wants a password: go-redis sends none (a user name
	// alone is not sent), and the error names the URL.
	srv := redistest.Server(t)
	if err := srv.Client(t).ConfigSet(t.Context(), "requirepass", "the-real-one").Err(); err != nil {
		t.Fatal(err)
	}
	r := sgctl(t, t.Context(), map[string]string{"REDIS_URL": "redis://" + secret + "@" + srv.Addr() + "/0"}, nil, "ps")
	if r.code == exitOK || !strings.Contains(r.stderr, "REDIS_URL=redis://xxxxx@"+srv.Addr()) {
		t.Errorf("ps against a server that wants a password: exit %d %q, want an error naming REDIS_URL with its userinfo masked", r.code, r.stderr)
	}
	if strings.Contains(r.stdout+r.stderr, secret) {
		t.Errorf("ps: the output shows the userinfo: %q", r.stderr)
	}
}
