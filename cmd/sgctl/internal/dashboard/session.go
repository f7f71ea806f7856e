package dashboard

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net/url"
	"sync"
	"time"
)

// DefaultSessionTTL is how long a login lasts (Config.SessionTTL).
const DefaultSessionTTL = 12 * time.Hour

// maxSessions bounds the sessions kept: past it, a login ends the session
// that would expire first. Only a holder of the token can log in, so this
// bounds memory, not an attack.
const maxSessions = 1024

// session is one login: what the cookie names, kept in the dashboard's
// memory until it expires or its browser logs out.
type session struct {
	csrf    string    // the CSRF token of its pages
	expires time.Time // refused from then on
}

// sessions are the logins of one dashboard process. The cookie carries a
// random id; the map is keyed by its SHA-256, so a lookup compares no
// secret byte by byte. A restart of the dashboard ends every session.
type sessions struct {
	ttl time.Duration
	now func() time.Time

	mu sync.Mutex
	m  map[[sha256.Size]byte]session
}

func newSessions(ttl time.Duration, now func() time.Time) *sessions {
	return &sessions{ttl: ttl, now: now, m: map[[sha256.Size]byte]session{}}
}

// create starts a session: its id (the cookie's value) and the session.
func (ss *sessions) create() (string, session) {
	id := rand.Text() + rand.Text() // 256 bits
	now := ss.now()
	s := session{csrf: rand.Text(), expires: now.Add(ss.ttl)}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for k, v := range ss.m {
		if !now.Before(v.expires) {
			delete(ss.m, k)
		}
	}
	if len(ss.m) >= maxSessions {
		var first [sha256.Size]byte
		var at time.Time
		for k, v := range ss.m {
			if at.IsZero() || v.expires.Before(at) {
				first, at = k, v.expires
			}
		}
		delete(ss.m, first)
	}
	ss.m[sha256.Sum256([]byte(id))] = s
	return id, s
}

// get returns the live session of id; an expired one is forgotten.
func (ss *sessions) get(id string) (session, bool) {
	k := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s, ok := ss.m[k]
	if ok && !ss.now().Before(s.expires) {
		delete(ss.m, k)
		return session{}, false
	}
	return s, ok
}

// end forgets the session of id: its cookie is refused from then on.
func (ss *sessions) end(id string) {
	ss.mu.Lock()
	delete(ss.m, sha256.Sum256([]byte(id)))
	ss.mu.Unlock()
}

// ParsePublicURL parses a public URL of the dashboard (Config.PublicURL,
// sgctl dashboard --public-url): http or https, a host, no path, query or
// fragment, since the dashboard's pages are at the root. "" is nil.
func ParsePublicURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%q is not a URL: %w", s, err)
	case u.User != nil:
		return nil, fmt.Errorf("%s://%s...: want no user information in the URL", u.Scheme, u.Host)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%q: want an http or https URL, such as https://dashboard.example.com", s)
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("%q has no host", s)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return nil, fmt.Errorf("%q: want no path, query or fragment (the dashboard is served at the root)", s)
	}
	return u, nil
}
