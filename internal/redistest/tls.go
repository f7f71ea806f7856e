package redistest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CertValidity is how long the certificates of a CA made by NewCA are valid:
// from a minute before they are made (a little clock skew) to an hour after.
const CertValidity = time.Hour

// CA is a certificate authority made for one test: an ECDSA P-256 key and a
// self-signed certificate, valid for CertValidity. It issues server and
// client certificates (Server, Client) and writes PEM files in its own
// t.TempDir().
type CA struct {
	name string
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	file string
}

// NewCA makes a CA whose certificate's common name is name and writes that
// certificate to a PEM file (CA.File). It fails the test on error.
func NewCA(tb testing.TB, name string) *CA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("redistest: CA key: %v", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(CertValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("redistest: CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("redistest: CA certificate: %v", err)
	}
	ca := &CA{name: name, dir: tb.TempDir(), cert: cert, key: key, pem: pemBlock("CERTIFICATE", der)}
	ca.file = filepath.Join(ca.dir, "ca.pem")
	WriteFile(tb, ca.file, ca.pem)
	return ca
}

// File returns the path of the CA's certificate, PEM.
func (ca *CA) File() string { return ca.file }

// PEM returns the CA's certificate, PEM.
func (ca *CA) PEM() []byte { return append([]byte(nil), ca.pem...) }

// Certificate returns the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Pool returns a pool holding the CA's certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Pair is a certificate and its private key, PEM, and the files they are
// written to.
type Pair struct {
	Cert *x509.Certificate
	// CertPEM and KeyPEM are the certificate and its key (PKCS #8).
	CertPEM, KeyPEM []byte
	// CertFile and KeyFile are where Write put them last.
	CertFile, KeyFile string
}

// TLSCertificate returns the pair as a tls.Certificate.
func (p *Pair) TLSCertificate(tb testing.TB) tls.Certificate {
	tb.Helper()
	c, err := tls.X509KeyPair(p.CertPEM, p.KeyPEM)
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	return c
}

// Write writes the certificate and the key to certFile and keyFile, each
// atomically (a temporary file in the same directory, then a rename), the
// certificate first, as a rotation does; it records the paths in the pair.
func (p *Pair) Write(tb testing.TB, certFile, keyFile string) {
	tb.Helper()
	WriteFile(tb, certFile, p.CertPEM)
	WriteFile(tb, keyFile, p.KeyPEM)
	p.CertFile, p.KeyFile = certFile, keyFile
}

// Server issues a server certificate for IP 127.0.0.1 and the name
// localhost, valid for CertValidity, and writes it to server.pem and
// server.key in the CA's directory.
func (ca *CA) Server(tb testing.TB) *Pair {
	tb.Helper()
	now := time.Now()
	p := ca.issue(tb, &x509.Certificate{
		NotBefore:   now.Add(-time.Minute),
		NotAfter:    now.Add(CertValidity),
		Subject:     pkix.Name{CommonName: "redistest server"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:    []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.Write(tb, filepath.Join(ca.dir, "server.pem"), filepath.Join(ca.dir, "server.key"))
	return p
}

// Client issues a client certificate with common name cn, valid for
// CertValidity. It writes no file: Pair.Write does.
func (ca *CA) Client(tb testing.TB, cn string) *Pair {
	tb.Helper()
	now := time.Now()
	return ca.ClientValid(tb, cn, now.Add(-time.Minute), now.Add(CertValidity))
}

// ClientValid issues a client certificate with common name cn, valid from
// notBefore to notAfter (an expired one, say). It writes no file.
func (ca *CA) ClientValid(tb testing.TB, cn string, notBefore, notAfter time.Time) *Pair {
	tb.Helper()
	return ca.issue(tb, &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
	})
}

func (ca *CA) issue(tb testing.TB, tmpl *x509.Certificate) *Pair {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("redistest: key: %v", err)
	}
	tmpl.SerialNumber = serial(tb)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatalf("redistest: certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("redistest: certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("redistest: key: %v", err)
	}
	return &Pair{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("PRIVATE KEY", pk)}
}

func serial(tb testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		tb.Fatalf("redistest: serial: %v", err)
	}
	return n
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// WriteFile writes data to path atomically: to a temporary file in the same
// directory, then renamed over path, so a reader sees the old content or the
// new, never a part. The file is readable by its owner only.
func WriteFile(tb testing.TB, path string, data []byte) {
	tb.Helper()
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	_, werr := f.Write(data)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		_ = os.Remove(f.Name())
		tb.Fatalf("redistest: writing %s: %v", path, werr)
	}
}

// TLSFiles are what a TLS server (TLSServer) was started with and a client
// pair that it accepts.
type TLSFiles struct {
	// CA issued the server's certificate and the client's; the server's
	// tls-ca-cert-file is CA.File(), and so is what a client verifies the
	// server with.
	CA *CA
	// Server is the server's certificate (tls-cert-file, tls-key-file).
	Server *Pair
	// Client is a client certificate that CA issued, written to client.pem
	// and client.key in the CA's directory.
	Client *Pair
}

// ClientConfig returns a TLS configuration that verifies the server with the
// CA and presents the client certificate.
func (f *TLSFiles) ClientConfig(tb testing.TB) *tls.Config {
	tb.Helper()
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		RootCAs:      f.CA.Pool(),
		Certificates: []tls.Certificate{f.Client.TLSCertificate(tb)},
	}
}

// TLSServer starts a standalone redis-server like Server that speaks only
// TLS and requires a client certificate: --port 0 --tls-port P
// --tls-cert-file --tls-key-file --tls-ca-cert-file --tls-auth-clients yes,
// with a CA made for the test (NewCA), a server certificate for 127.0.0.1
// and a client certificate, all ECDSA P-256 and valid for CertValidity
// (TLS() has them). Its readiness check and its Client speak TLS with the
// client certificate; its URL is rediss://.
//
// tls-ca-cert-file can be changed at run time (CONFIG SET; new connections
// are verified with the new file), which is how a test makes the server
// trust another CA.
func TLSServer(tb testing.TB, extraArgs ...string) *Srv {
	tb.Helper()
	ca := NewCA(tb, "redistest CA")
	files := &TLSFiles{CA: ca, Server: ca.Server(tb), Client: ca.Client(tb, "redistest client")}
	files.Client.Write(tb, filepath.Join(ca.dir, "client.pem"), filepath.Join(ca.dir, "client.key"))
	return server(tb, files, extraArgs)
}

// TLS returns the files of a server from TLSServer; nil for another server.
func (s *Srv) TLS() *TLSFiles { return s.tls }

// args are the command line arguments of a TLS server on port.
func (f *TLSFiles) args(port string) []string {
	return []string{
		"--port", "0",
		"--tls-port", port,
		"--tls-cert-file", f.Server.CertFile,
		"--tls-key-file", f.Server.KeyFile,
		"--tls-ca-cert-file", f.CA.File(),
		"--tls-auth-clients", "yes",
	}
}

// pingTLS sends one inline PING over a fresh TLS connection.
func pingTLS(addr string, cfg *tls.Config) error {
	d := &net.Dialer{Timeout: time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}
