package fleetenv_test

import (
	"fmt"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/fleetenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRedactHidesThePasswordOfAURLThatDoesNotParse(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		// The input of the report: '%' not followed by two hex digits.
		{"redis://user:p%ss@host:6379", "redis://xxxxx@host:6379"},
		{"redis://user:p%ss@host:6379/0?db=1", "redis://xxxxx@host:6379/0?db=1"},
		{"rediss://:100%secret@cache.internal:6380/0", "rediss://xxxxx@cache.internal:6380/0"},
		// '#', '/' and '?' in the password end the authority early.
		{"redis://u:p#ss@host:6379", "redis://xxxxx@host:6379"},
		{"redis://u:12#34@host:6379", "redis://xxxxx@host:6379"},
		{"redis://u:12/34@host:6379", "redis://xxxxx@host:6379"},
		{"redis://u:12?34@host:6379", "redis://xxxxx@host:6379"},
		// '@' in the password: everything up to the last '@' goes.
		{"redis://u:a@b%zz@host", "redis://xxxxx@host"},
		{"redis://u:a@b#c@host:6379/0", "redis://xxxxx@host:6379/0"},
		// No scheme separator, or an opaque URL: the same.
		{"user:p%ss@host:6379", "xxxxx@host:6379"},
		{"redis:user:pass@host", "xxxxx@host"},
		// A password parameter in a URL that does not parse.
		// Its value may hold '&' or '#': the rest of the URL goes with it.
		{"redis://host:bad/0?password=p%ss&db=1", "redis://host:bad/0?password=xxxxx"},
		{"redis://host:bad/?sentinel_password=s3#cret", "redis://host:bad/?sentinel_password=xxxxx"},
	} {
		if got := fleetenv.RedactURL(tc.raw); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}

func TestRedactMasksPasswordsOfAURLThatParses(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
		{"redis://user:secret@host:6379/0", "redis://user:xxxxx@host:6379/0"},
		{"redis://:secret@host:6379", "redis://:xxxxx@host:6379"},
		// A userinfo without ':' is often a password in the user's place.
		{"redis://user@host", "redis://xxxxx@host"},
		{"redis://s3cret@host:6379", "redis://xxxxx@host:6379"},
		{"redis://s3cret@host:6379/0?addr=h2:6379", "redis://xxxxx@host:6379/0?addr=h2:6379"},
		{"rediss://u:p%40ss@host/?addr=h2:6379&password=secret", "rediss://u:xxxxx@host/?addr=h2:6379&password=xxxxx"},
		{"redis://host/?db=1&PassWord=a&sentinel_password=b", "redis://host/?db=1&PassWord=xxxxx"},
		{"redis://host:6379/0#p4ss", "redis://host:6379/0#xxxxx"},
		// A Sentinel URL: the Sentinels' password and the master's.
		{"redis://sen:s3cret@s1:26379/0?master_name=m&addr=s2:26379&password=m4ster", "redis://sen:xxxxx@s1:26379/0?master_name=m&addr=s2:26379&password=xxxxx"},
		// An escaped parameter name, or a query that does not parse: all of it.
		{"redis://host/?pass%77ord=secret", "redis://host/?xxxxx"},
		{"redis://host/?db=0;password=secret", "redis://host/?xxxxx"},
		{"unix://u:secret@/run/redis.sock?db=1", "unix://u:xxxxx@/run/redis.sock?db=1"},
	} {
		if got := fleetenv.RedactURL(tc.raw); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.raw, got, tc.want)
		}
	}
}

// Every password made of the characters that break URLs, in every place a
// Redis URL carries one: the output never contains it.
func TestRedactNeverPrintsAPasswordWhateverItContains(t *testing.T) {
	specials := []string{"%", "%s", "%zz", "#", "/", "?", "@", ":", "&", "=", " ", "\x1b[31m", "%2", "p@ss#w/rd?"}
	shapes := []string{
		"redis://user:%s@host:6379/0",
		"redis://:%s@host:6379",
		"rediss://user:%s@host:6380/0?addr=h2:6379",
		"unix://user:%s@/run/redis.sock?db=0",
		"redis://host:6379/0?password=%s",
		"redis://host:6379/0?db=1&sentinel_password=%s&x=1",
		"redis://sen:%s@s1:26379/0?master_name=m&addr=s2:26379",
		"redis://s1:26379/0?master_name=m&password=%s&addr=s2:26379",
		"user:%s@host:6379",
	}
	for _, sp := range specials {
		pw := "Zq9" + sp + "Kx7"
		for _, shape := range shapes {
			raw := fmt.Sprintf(shape, pw)
			got := fleetenv.RedactURL(raw)
			for _, frag := range []string{"Zq9", "Kx7"} {
				if strings.Contains(got, frag) {
					t.Errorf("RedactURL(%q) = %q: shows %q of the password", raw, got, frag)
				}
			}
		}
	}
}

func ExampleRedactURL() {
	fmt.Println(fleetenv.RedactURL("redis://app:p%ss@cache:6379/0"))
	fmt.Println(fleetenv.RedactURL("redis://app:secret@cache:6379/0"))
	// Output:
	// redis://xxxxx@cache:6379/0
	// redis://app:xxxxx@cache:6379/0
}
