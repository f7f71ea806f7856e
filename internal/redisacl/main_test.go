package redisacl_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/internal/proctest"
	"github.com/stargazer/lifecycle/internal/redisacl"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(proctest.Main(m))
}

// docLines reads docs/redis-acl.md's ACL lines.
func docLines(t testing.TB) []redisacl.Line {
	t.Helper()
	path, err := redisacl.FindDoc()
	if err != nil {
		t.Fatal(err)
	}
	lines, err := redisacl.ReadDoc(path)
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

// roleRules returns the rules of role's line in the document.
func roleRules(t testing.TB, lines []redisacl.Line, role redisacl.Role) []string {
	t.Helper()
	l, err := redisacl.RoleLine(lines, role)
	if err != nil {
		t.Fatal(err)
	}
	return l.Rules()
}

// demoRules returns the rules the document adds to sg-instance for the
// demo's own key: the demo's test user has them beside the role's.
func demoRules(t testing.TB, lines []redisacl.Line) []string {
	t.Helper()
	var found [][]string
	for _, l := range redisacl.Additions(lines, string(redisacl.Instance)) {
		if slices.ContainsFunc(l.Rules(), func(r string) bool { return strings.HasPrefix(r, "~demo:") }) {
			found = append(found, l.Rules())
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one line adding the demo's own rules (~demo:...) to %s in the document, have %d", redisacl.Instance, len(found))
	}
	return found[0]
}

// setUser creates user on rdb with the rules given.
func setUser(t testing.TB, rdb redis.UniversalClient, user, password string, rules ...[]string) {
	t.Helper()
	if err := redisacl.SetUser(context.Background(), rdb, user, password, rules...); err != nil {
		t.Fatal(err)
	}
}
