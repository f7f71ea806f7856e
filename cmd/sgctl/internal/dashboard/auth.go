package dashboard

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
)

// cookieName is the session cookie the login form sets.
const cookieName = "sg_dashboard"

// sessionValue is the session cookie's value for token: an HMAC of a fixed
// label, so the cookie is not the token itself (a leaked cookie cannot be
// used as a Bearer token elsewhere) and needs no server-side session store.
// Changing SG_DASHBOARD_TOKEN ends every session.
func sessionValue(token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("sgctl dashboard session v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// equal compares a and b in constant time, whatever their lengths: both
// are hashed first.
func equal(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// authorized reports whether r carries the token: the session cookie, or
// "Authorization: Bearer <token>". Without a configured token every request
// is.
func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.Token == "" {
		return true
	}
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		return ok && strings.EqualFold(scheme, "Bearer") && equal(strings.TrimSpace(tok), s.cfg.Token)
	}
	if c, err := r.Cookie(cookieName); err == nil {
		return equal(c.Value, s.sessions)
	}
	return false
}

// unauthorized answers 401: the login form to a browser asking for a page,
// a line of text to anything else.
func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="sgctl dashboard"`)
	if r.Method == http.MethodGet && strings.Contains(r.Header.Get("Accept"), "text/html") {
		s.render(w, http.StatusUnauthorized, "login.html", loginView{})
		return
	}
	http.Error(w, "dashboard: unauthorized: log in, or send Authorization: Bearer <SG_DASHBOARD_TOKEN>", http.StatusUnauthorized)
}

type loginView struct {
	Failed bool
	NoAuth bool // no token configured: nothing to log in to
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, http.StatusOK, "login.html", loginView{NoAuth: s.cfg.Token == ""})
}

// login checks the form's token and sets the session cookie: HttpOnly (no
// script reads it), SameSite=Strict (no other site's page sends it), for
// the whole dashboard, for the browser session.
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
	if err != nil || !equal(r.PostForm.Get("token"), s.cfg.Token) {
		s.render(w, http.StatusUnauthorized, "login.html", loginView{Failed: true})
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: s.sessions, Path: "/",
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
