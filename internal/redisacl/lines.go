package redisacl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The document's lines, for the tests that create their users from it.

// Line is one ACL line of Doc: an "ACL SETUSER <user> ..." command, or a
// redis.conf (or ACL file) "user <user> ..." line.
type Line struct {
	// Conf is true for a "user" line.
	Conf bool
	User string
	// Tokens are what follows the user name.
	Tokens []string
}

// Resets reports whether the line starts the user afresh ("reset"), as a
// role's line does; a line without it adds rules to what the user has.
func (l Line) Resets() bool { return slices.Contains(l.Tokens, "reset") }

// Rules returns the line's rules: its tokens less "reset", "on", "off" and
// the password ones (">...", "<...", "#...", "!...", "nopass", "resetpass").
func (l Line) Rules() []string {
	var out []string
	for _, t := range l.Tokens {
		switch {
		case t == "reset", t == "on", t == "off", t == "nopass", t == "resetpass":
		case strings.HasPrefix(t, ">"), strings.HasPrefix(t, "<"), strings.HasPrefix(t, "#"), strings.HasPrefix(t, "!"):
		default:
			out = append(out, t)
		}
	}
	return out
}

// ReadDoc reads the ACL lines of the document at path, in order: every line
// of a fenced code block that starts (after spaces) with "ACL SETUSER " or
// "user ".
func ReadDoc(path string) ([]Line, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []Line
	fenced := false
	for _, raw := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(raw), "```") {
			fenced = !fenced
			continue
		}
		f := strings.Fields(raw)
		switch {
		case !fenced:
		case len(f) >= 3 && f[0] == "ACL" && strings.EqualFold(f[1], "SETUSER"):
			out = append(out, Line{User: f[2], Tokens: f[3:]})
		case len(f) >= 2 && f[0] == "user":
			out = append(out, Line{Conf: true, User: f[1], Tokens: f[2:]})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("redisacl: %s has no ACL SETUSER line", path)
	}
	return out, nil
}

// FindDoc returns the path of Doc, looking in the working directory and its
// parents (a test runs in its package's directory, a nested module's
// included).
func FindDoc() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, filepath.FromSlash(Doc))
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("redisacl: %s not found above the working directory", Doc)
		}
		dir = parent
	}
}

// RoleLine returns the "ACL SETUSER" line of role that resets the user: the
// role's line.
func RoleLine(lines []Line, role Role) (Line, error) {
	for _, l := range lines {
		if !l.Conf && l.User == string(role) && l.Resets() {
			return l, nil
		}
	}
	return Line{}, fmt.Errorf("redisacl: no \"ACL SETUSER %s reset ...\" line in %s", role, Doc)
}

// Additions returns the "ACL SETUSER" lines for user that add rules
// without resetting it (a service's own rules), in order.
func Additions(lines []Line, user string) []Line {
	var out []Line
	for _, l := range lines {
		if !l.Conf && l.User == user && !l.Resets() {
			out = append(out, l)
		}
	}
	return out
}

// ConfLine returns the redis.conf "user" line of role.
func ConfLine(lines []Line, role Role) (Line, error) {
	for _, l := range lines {
		if l.Conf && l.User == string(role) {
			return l, nil
		}
	}
	return Line{}, fmt.Errorf("redisacl: no \"user %s ...\" line in %s", role, Doc)
}

// SetUser creates (or resets) user on c with password and the rules given,
// in order: ACL SETUSER user reset on >password rules... It needs a
// connection allowed to run ACL SETUSER.
func SetUser(ctx context.Context, c redis.UniversalClient, user, password string, rules ...[]string) error {
	if user == "" || password == "" {
		return errors.New("redisacl: SetUser: empty user or password")
	}
	args := []any{"ACL", "SETUSER", user, "reset", "on", ">" + password}
	for _, rs := range rules {
		for _, r := range rs {
			args = append(args, r)
		}
	}
	if err := c.Do(ctx, args...).Err(); err != nil {
		return fmt.Errorf("redisacl: ACL SETUSER %s: %w", user, err)
	}
	return nil
}
