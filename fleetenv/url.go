package fleetenv

import (
	"errors"
	"net/url"
	"strings"
)

// ErrUnclear is returned by ParseURL for a URL that does not parse, or whose
// user and password cannot be told apart from the rest. Its text never
// quotes the URL.
var ErrUnclear = errors.New("not a URL whose password can be told apart: " +
	"escape '%', '#', '/', '?' and '@' in a password as %25, %23, %2F, %3F and %40")

// ParseURL parses raw as url.Parse does, and also refuses what RedactURL would mask
// by position: an opaque URL ("redis:user:pass@host") and a URL with an '@'
// outside its userinfo (a password with an unescaped '#', '/' or '?' that
// url.Parse reads as the end of the host). Its only error is ErrUnclear, so
// that an error message built from it cannot hold the password.
func ParseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || strings.Count(raw, "@") != btoi(u.User != nil) {
		return nil, ErrUnclear
	}
	return u, nil
}

// Mask replaces every secret RedactURL removes.
const Mask = "xxxxx"

// RedactURL returns raw fit for a log line or an error message: a password in
// the userinfo is replaced by Mask (as url.URL.Redacted does), a userinfo
// without a password (a user name alone, or a password in its place) is
// replaced whole, and so is the
// value of a query parameter whose name ends in password (any case, e.g.
// password= or sentinel_password=), with the rest of the query after it (an
// unescaped '&' may be part of the password); a fragment is masked too.
//
// It never fails open. A URL that does not parse (an unescaped '%' in the
// password, a '#' or '/' in it, a bad port) is printed without anything that
// could be its userinfo: everything between "://" and the last '@' becomes
// Mask, and password parameters are masked wherever they appear.
func RedactURL(raw string) string {
	if u, err := ParseURL(raw); err == nil {
		switch _, has := u.User.Password(); {
		case has:
			u.User = url.UserPassword(u.User.Username(), Mask)
		case u.User != nil:
			// A userinfo without ':' is a user name to go-redis, but
			// far more often a password put where clients such as
			// redis-cli -u take none ("redis://s3cret@host"): all of
			// it is masked.
			u.User = url.User(Mask)
		}
		if u.RawQuery != "" {
			u.RawQuery = redactParsedQuery(u.RawQuery)
		}
		if u.Fragment != "" {
			// Redis URLs have no use for a fragment: a '#' there is more
			// likely part of a password than anything else.
			u.Fragment, u.RawFragment = Mask, ""
		}
		return u.String()
	}
	// Unparsable, or parsed in a way that does not account for every '@'
	// ("redis:user:pass@host" is an opaque URL; "redis://u:1#2@h" has its
	// "userinfo" in the fragment): mask by position.
	s := redactQuery(raw)
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		scheme, rest = "", s
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		rest = Mask + rest[i:]
	}
	if ok {
		return scheme + "://" + rest
	}
	return rest
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// redactParsedQuery masks the password parameters of a parsed URL's query,
// and the whole query when that does not leave every such parameter masked
// (an escaped name such as pass%77ord, a query that does not parse).
func redactParsedQuery(q string) string {
	q = redactQuery(q)
	vals, err := url.ParseQuery(q)
	if err != nil {
		return Mask
	}
	for k, vs := range vals {
		if !strings.HasSuffix(strings.ToLower(k), "password") {
			continue
		}
		for _, v := range vs {
			if v != Mask {
				return Mask
			}
		}
	}
	return q
}

// redactQuery masks the value of the first parameter whose name ends in
// "password" (case-insensitive), in a query string or in a whole URL that did
// not parse, and drops everything after it: a password may hold an unescaped
// '&' or '#', so where it ends cannot be known.
func redactQuery(s string) string {
	i := strings.Index(strings.ToLower(s), "password=")
	if i < 0 {
		return s
	}
	return s[:i+len("password=")] + Mask
}
