package dashboard

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"time"
)

// cookieName is the session cookie the login form sets. Its value is the
// id of a session kept in the dashboard's memory (session.go), never the
// token or anything derived from it.
const cookieName = "sg_dashboard"

// csrfField is the login and logout forms' field for the CSRF token, which
// a form cannot send as a header.
const csrfField = "csrf"

// equal compares a and b in constant time, whatever their lengths: both
// are hashed first.
func equal(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// csrfHeader carries, on every POST of a browser, the CSRF token of the
// dashboard's pages (their config's "csrf").
const csrfHeader = "X-CSRF-Token"

// caller is who sent a request, as guard found out.
type caller struct {
	bearer  bool   // Authorization: Bearer <token>: a script, not a browser
	session string // the id in the session cookie, when it names a live session
	csrf    string // the CSRF token of its pages, which its POSTs must send
}

type callerKey struct{}

// identify returns the request's caller, and false when a token is
// configured and the request carries neither it ("Authorization: Bearer
// <token>") nor the cookie of a live session. Without a token every
// request is authorised, and the CSRF token is the one made at start; a
// session's pages carry the session's own.
func (s *Server) identify(r *http.Request) (caller, bool) {
	if s.cfg.Token == "" {
		return caller{csrf: s.csrf}, true
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		return caller{bearer: true}, ok && strings.EqualFold(scheme, "Bearer") && equal(strings.TrimSpace(tok), s.cfg.Token)
	}
	if c, err := r.Cookie(cookieName); err == nil {
		if sess, ok := s.sessions.get(c.Value); ok {
			return caller{session: c.Value, csrf: sess.csrf}, true
		}
	}
	return caller{}, false
}

// sentCSRF reports whether r, a POST of c, carries c's CSRF token in the
// X-CSRF-Token header (or, when form is set, in the form's csrf field): a
// page of another origin cannot read it, and a client that never loaded a
// page does not have it. A Bearer token needs none: no browser sends one
// by itself.
func (c caller) sentCSRF(r *http.Request, form bool) bool {
	if c.bearer {
		return true
	}
	got := r.Header.Get(csrfHeader)
	if got == "" && form {
		got = r.PostFormValue(csrfField)
	}
	return c.csrf != "" && equal(got, c.csrf)
}

// noCSRF answers 403 to a POST without the CSRF token.
func noCSRF(w http.ResponseWriter) {
	http.Error(w, "dashboard: this POST lacks the "+csrfHeader+" of a dashboard page, which its pages send: reload the page "+
		"(a script sends Authorization: Bearer <SG_DASHBOARD_TOKEN>)", http.StatusForbidden)
}

// callerOf returns the caller guard found for r.
func callerOf(r *http.Request) caller {
	c, _ := r.Context().Value(callerKey{}).(caller)
	return c
}

// unauthorized answers 401: the login form to a browser asking for a page,
// a line of text to anything else.
func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="sgctl dashboard"`)
	if r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") {
		s.render(w, http.StatusUnauthorized, "login.html", loginView{CSRF: s.csrf})
		return
	}
	http.Error(w, "dashboard: unauthorized: log in, or send Authorization: Bearer <SG_DASHBOARD_TOKEN>", http.StatusUnauthorized)
}

type loginView struct {
	Failed bool
	NoAuth bool   // no token configured: nothing to log in to
	CSRF   string // the login form's CSRF token, made at start
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, http.StatusOK, "login.html", loginView{NoAuth: s.cfg.Token == "", CSRF: s.csrf})
}

// login checks the form's CSRF token (the login page's, so that no other
// site can log a browser in) and token, and starts a session: its cookie is
// HttpOnly (no script reads it), SameSite=Strict (no other site's page
// sends it), Secure when the public URL is https or the request came over
// TLS, and expires with the session (Config.SessionTTL).
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Token == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	err := r.ParseForm() // of at most MaxBody bytes (guard), read within ReadTimeout
	if _, big := errors.AsType[*http.MaxBytesError](err); big {
		bodyError(w, err)
		return
	}
	if err == nil && !(caller{csrf: s.csrf}).sentCSRF(r, true) {
		noCSRF(w)
		return
	}
	if err != nil || !equal(r.PostForm.Get("token"), s.cfg.Token) {
		s.render(w, http.StatusUnauthorized, "login.html", loginView{Failed: true, CSRF: s.csrf})
		return
	}
	id, sess := s.sessions.create()
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: id, Path: "/",
		MaxAge: int(s.cfg.SessionTTL / time.Second), Expires: sess.expires.UTC(),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure(r),
	})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// logout ends the request's session, if its cookie names one: the POST
// must carry that session's CSRF token, and the cookie's value is refused
// from then on, wherever a copy of it is. The browser is told to drop it.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, _ := s.identify(r); c.session != "" {
		if !c.sentCSRF(r, true) {
			noCSRF(w)
			return
		}
		s.sessions.end(c.session)
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: s.secure(r)})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// secure reports whether the session cookie is Secure: when the dashboard's
// public URL is https (behind a TLS proxy the request itself is plain
// HTTP), or when r came over TLS.
func (s *Server) secure(r *http.Request) bool {
	return s.httpsPublic || r.TLS != nil
}
