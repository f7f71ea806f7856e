package fleetenv

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// VarError names an environment variable whose value is wrong. Value is fit
// to print: for a variable that names a file it is the path, never the
// file's contents.
type VarError struct {
	Name  string
	Value string
	Err   error
}

func (e *VarError) Error() string { return fmt.Sprintf("%s=%q: %v", e.Name, e.Value, e.Err) }

// Unwrap returns the underlying error.
func (e *VarError) Unwrap() error { return e.Err }

// RedisTLS is the client side of TLS with Redis, read from SG_REDIS_TLS_CERT,
// SG_REDIS_TLS_KEY and SG_REDIS_TLS_CA (ParseRedisTLS): a client certificate
// for a server that requires one (tls-auth-clients yes), and the CA bundle
// that verifies the server. NewRedisClient applies it with WithTLS, to the
// connections of all three forms of REDIS_URL, which must be rediss://.
//
// Rotation: the certificate and its key are read again at the next TLS
// handshake after either file changed (its modification time, size or
// inode: a file replaced by a rename is a new inode), so a pair rotated on
// disk is presented from the next new connection on, without a restart;
// connections already open keep the session they have. While the files do
// not load as a pair (the certificate replaced and the key not yet, or a
// bad file), the last pair that loaded is presented and a warning is
// logged once per state of the files, naming the variable, the path and the
// error; the next handshake tries again. Unchanged files are not read again.
// The CA bundle is read once, by ParseRedisTLS: a new server CA needs a
// restart.
//
// A RedisTLS is safe for concurrent use, and may be shared by several
// clients.
type RedisTLS struct {
	certFile, keyFile, caFile string
	roots                     *x509.CertPool // nil: the system roots
	pair                      *keyPair       // nil: no client certificate
	log                       atomic.Pointer[slog.Logger]
}

// ParseRedisTLS reads SG_REDIS_TLS_CERT (a PEM certificate file, the chain
// after the leaf if any), SG_REDIS_TLS_KEY (its PEM private key file) and
// SG_REDIS_TLS_CA (a PEM file of CA certificates that verify the server)
// through getenv. It returns nil, nil when none is set.
//
// The certificate and the key go together: one without the other is an
// error naming the one missing. The CA is optional: without it the system's
// roots verify the server. The files are loaded now, so that a missing,
// unreadable or unparsable file, a key that is not the certificate's, or a
// certificate outside its validity period is found before anything dials
// Redis. Errors are *VarError naming the variable and the path; they never
// quote a file's contents.
func ParseRedisTLS(getenv func(string) string) (*RedisTLS, error) {
	t := &RedisTLS{certFile: getenv(RedisTLSCert), keyFile: getenv(RedisTLSKey), caFile: getenv(RedisTLSCA)}
	switch {
	case t.certFile == "" && t.keyFile == "" && t.caFile == "":
		return nil, nil
	case t.certFile != "" && t.keyFile == "":
		return nil, &VarError{Name: RedisTLSKey, Err: fmt.Errorf("unset, while %s is set: a client certificate needs its private key", RedisTLSCert)}
	case t.keyFile != "" && t.certFile == "":
		return nil, &VarError{Name: RedisTLSCert, Err: fmt.Errorf("unset, while %s is set: a private key needs its client certificate", RedisTLSKey)}
	}
	if t.certFile != "" {
		p := &keyPair{certFile: t.certFile, keyFile: t.keyFile, log: t.logger}
		cs, _ := os.Stat(p.certFile)
		ks, _ := os.Stat(p.keyFile)
		c, err := p.load()
		if err != nil {
			return nil, err
		}
		p.cert, p.certStat, p.keyStat = c, cs, ks
		now := time.Now()
		if leaf := c.Leaf; now.After(leaf.NotAfter) {
			return nil, &VarError{Name: RedisTLSCert, Value: t.certFile, Err: fmt.Errorf("the certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))}
		} else if now.Before(leaf.NotBefore) {
			return nil, &VarError{Name: RedisTLSCert, Value: t.certFile, Err: fmt.Errorf("the certificate is not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339))}
		}
		t.pair = p
	}
	if t.caFile != "" {
		roots, err := loadRoots(t.caFile)
		if err != nil {
			return nil, &VarError{Name: RedisTLSCA, Value: t.caFile, Err: err}
		}
		t.roots = roots
	}
	return t, nil
}

// SetLogger sets where a failed or successful reload of the certificate is
// logged (default slog.Default()). A nil logger is ignored. It may be called
// at any time.
func (t *RedisTLS) SetLogger(l *slog.Logger) {
	if t != nil && l != nil {
		t.log.Store(l)
	}
}

func (t *RedisTLS) logger() *slog.Logger {
	if l := t.log.Load(); l != nil {
		return l
	}
	return slog.Default()
}

// TLSConfig returns a copy of base (a new config when nil, with TLS 1.2 at
// least) that verifies the server with SG_REDIS_TLS_CA's certificates, when
// set, and presents the client certificate, loaded at each handshake as
// RedisTLS says. The rest of base (ServerName, InsecureSkipVerify) is kept.
// On a nil t it returns base.
func (t *RedisTLS) TLSConfig(base *tls.Config) *tls.Config {
	if t == nil {
		return base
	}
	c := &tls.Config{}
	if base != nil {
		c = base.Clone()
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	if t.roots != nil {
		c.RootCAs = t.roots
	}
	if t.pair != nil {
		c.Certificates = nil
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return t.pair.get(), nil }
	}
	return c
}

// vars names the variables set, for messages: "SG_REDIS_TLS_CERT,
// SG_REDIS_TLS_KEY".
func (t *RedisTLS) vars() string {
	var set []string
	for _, v := range []struct{ name, value string }{{RedisTLSCert, t.certFile}, {RedisTLSKey, t.keyFile}, {RedisTLSCA, t.caFile}} {
		if v.value != "" {
			set = append(set, v.name)
		}
	}
	return strings.Join(set, ", ")
}

// keyPair is a client certificate and key on disk, and the last pair that
// loaded from them.
type keyPair struct {
	certFile, keyFile string
	log               func() *slog.Logger

	mu       sync.Mutex
	cert     *tls.Certificate // the last good pair
	certStat os.FileInfo      // of the files cert was loaded from
	keyStat  os.FileInfo
	// The state of the files whose load failed last, and its error: logged
	// once.
	badCert, badKey os.FileInfo
	badErr          string
	loads           int // successful loads, for tests
}

// get returns the pair to present: loaded again when a file changed since
// the last good load, the last good one when that fails.
func (p *keyPair) get() *tls.Certificate {
	cs, _ := os.Stat(p.certFile)
	ks, _ := os.Stat(p.keyFile)
	p.mu.Lock()
	defer p.mu.Unlock()
	if sameFile(cs, p.certStat) && sameFile(ks, p.keyStat) {
		return p.cert
	}
	c, err := p.load()
	if err != nil {
		// Mid-rotation (the certificate replaced, the key not yet) or a bad
		// file: the last good pair still serves, and the next handshake
		// tries again. One line per state of the files.
		if !sameState(cs, p.badCert) || !sameState(ks, p.badKey) || err.Error() != p.badErr {
			p.badCert, p.badKey, p.badErr = cs, ks, err.Error()
			p.log().Warn("redis TLS: the client certificate on disk does not load; presenting the one loaded before until it does",
				"error", err.Error(), "presented_not_after", p.cert.Leaf.NotAfter)
		}
		return p.cert
	}
	// Stat'ed before the read: if the files changed in between, the next
	// handshake reads them again.
	p.cert, p.certStat, p.keyStat = c, cs, ks
	p.badCert, p.badKey, p.badErr = nil, nil, ""
	if p.loads > 1 {
		p.log().Info("redis TLS: client certificate reloaded", "path", p.certFile,
			"subject", c.Leaf.Subject.String(), "not_after", c.Leaf.NotAfter)
	}
	return c
}

// load reads and checks the pair. It counts a success. Errors are *VarError
// naming the file at fault.
func (p *keyPair) load() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(p.certFile)
	if err != nil {
		return nil, &VarError{Name: RedisTLSCert, Value: p.certFile, Err: readError(err)}
	}
	keyPEM, err := os.ReadFile(p.keyFile)
	if err != nil {
		return nil, &VarError{Name: RedisTLSKey, Value: p.keyFile, Err: readError(err)}
	}
	if err := checkPEM(certPEM, func(t string) bool { return t == "CERTIFICATE" }, "CERTIFICATE"); err != nil {
		return nil, &VarError{Name: RedisTLSCert, Value: p.certFile, Err: err}
	}
	if err := checkPEM(keyPEM, func(t string) bool { return strings.HasSuffix(t, "PRIVATE KEY") }, "PRIVATE KEY"); err != nil {
		return nil, &VarError{Name: RedisTLSKey, Value: p.keyFile, Err: err}
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// crypto/tls's messages say what is wrong, never quote the bytes.
		if strings.Contains(err.Error(), "does not match") {
			err = fmt.Errorf("%w: not the key of the certificate in %s", err, RedisTLSCert)
		}
		return nil, &VarError{Name: RedisTLSKey, Value: p.keyFile, Err: err}
	}
	p.loads++
	return &c, nil
}

// checkPEM reports whether data is PEM with a block whose type is want
// (named so in the message), and every CERTIFICATE block in it parses.
func checkPEM(data []byte, want func(string) bool, name string) error {
	found := false
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(b.Bytes); err != nil {
				return fmt.Errorf("a CERTIFICATE block does not parse: %w", err)
			}
		}
		found = found || want(b.Type)
	}
	if !found {
		return fmt.Errorf("no PEM %s block in the file", name)
	}
	return nil
}

// loadRoots reads a PEM CA bundle.
func loadRoots(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, readError(err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of the bundle does not parse: %w", n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("no PEM CERTIFICATE block in the file")
	}
	return pool, nil
}

// readError is a failed read without the path, which the message names
// already.
func readError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("cannot read the file: %w", pe.Err)
	}
	return err
}

// sameState is sameFile, where two failed stats are the same too.
func sameState(a, b os.FileInfo) bool { return (a == nil && b == nil) || sameFile(a, b) }

// sameFile reports whether a and b are the same file, unchanged: the same
// inode (os.SameFile), modification time and size. nil (a failed stat) is
// never the same.
func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}
