// Package redistest starts real redis-server processes for tests: a standalone
// server (Server), a three-master Redis Cluster (Cluster), a cluster of three
// masters with a replica each (ClusterWithReplicas), and a master, a replica
// and a Sentinel monitoring them (Sentinel).
//
// Use miniredis for logic; use this package for what only a real server shows:
// restarts on the same port, eviction under maxmemory, approximate stream
// trimming, cluster slots and redirections.
//
// TLS: TLSServer makes a CA for the test (NewCA: crypto/x509, ECDSA P-256,
// valid for CertValidity), a server certificate for 127.0.0.1 and a client
// certificate, written to PEM files in a t.TempDir(); its readiness check and
// its Client present the client certificate. A CA issues more client pairs
// (CA.Client), and Pair.Write replaces a pair's files atomically, as a
// certificate rotation does.
//
// Without a redis-server: RefusedAddr is a loopback address that refuses
// connections, and Silent a listener that accepts them, counts them and
// never answers.
//
// Freeze and Thaw stop and resume a server (SIGSTOP, SIGCONT) to show what a
// Redis that accepts connections but answers nothing does to its clients.
//
// Failover: Kill the master of a Sentinel set or the master serving a key's
// slot in ClusterWithReplicas, then WaitFailover or WaitPromoted returns the
// promoted replica and when it was first seen as master. Both set-ups use
// small timeouts (SentinelDownAfter, ReplicaClusterNodeTimeout), so a failover
// takes one to three seconds.
//
// Every server binds 127.0.0.1 only, runs in its own t.TempDir() with
// persistence disabled (--save "" --appendonly no), writes its log to a file in
// that directory, and is killed and awaited by t.Cleanup. Clients returned by
// Client are closed by t.Cleanup before their server is killed.
//
// When redis-server (or, for Cluster, redis-cli) is not on PATH the test is
// skipped with a message saying how to install it, unless the environment
// variable CI is "true": then the test fails, so CI cannot silently skip the
// real-Redis tests.
//
// Ports: a free port is found by listening on 127.0.0.1:0, reading the port
// and closing the listener before redis-server binds it. Another process may
// take the port in between; when the server fails to start because its
// address is in use, Server and Cluster retry with a new port (up to three
// attempts) instead of failing the test.
package redistest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// StartTimeout bounds how long a server (or the cluster) may take to answer
// after it was started.
const StartTimeout = 15 * time.Second

// installHint is the message of a skipped (or, with CI=true, failed) test.
const installHint = "install redis-server (apt-get install -y redis-server) to run"

// errAddrInUse reports that redis-server could not bind its port: the
// free-port race was lost and another port should be tried.
var errAddrInUse = errors.New("address already in use")

// Srv is one redis-server process. Its methods are safe for concurrent use.
type Srv struct {
	tb      testing.TB
	bin     string
	dir     string
	logPath string
	port    int
	args    []string
	conf    string // a config file given first on the command line (Sentinel's); "" for none
	ownDir  bool   // created by Start: removed by Kill
	// tls, for a server from TLSServer, holds its certificates; clientTLS is
	// what its readiness check and Client present.
	tls       *TLSFiles
	clientTLS *tls.Config

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been awaited
	logf   *os.File
	frozen bool // stopped with SIGSTOP by Freeze
	// loadingOK: the next start is ready when the server answers PING with
	// its LOADING error (RestartLoading).
	loadingOK bool
}

// Server starts a standalone redis-server on a free loopback port and waits
// until it answers PING. extraArgs are appended to the command line, e.g.
// "--maxmemory", "2mb", "--maxmemory-policy", "allkeys-random".
//
// The server is killed and awaited by t.Cleanup. Server fails the test when
// the server does not answer within StartTimeout, printing the tail of its log.
func Server(tb testing.TB, extraArgs ...string) *Srv {
	tb.Helper()
	return server(tb, nil, extraArgs)
}

// server starts a standalone server, speaking TLS when files is not nil.
func server(tb testing.TB, files *TLSFiles, extraArgs []string) *Srv {
	tb.Helper()
	bin := requireBinary(tb, "redis-server")
	var clientTLS *tls.Config
	if files != nil {
		clientTLS = files.ClientConfig(tb)
	}
	dir := tb.TempDir()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort(false)
		if err != nil {
			tb.Fatalf("redistest: finding a free port: %v", err)
		}
		s := &Srv{tb: tb, bin: bin, dir: dir, port: port, args: extraArgs,
			logPath: filepath.Join(dir, "redis.log"), tls: files, clientTLS: clientTLS}
		_ = os.Remove(s.logPath) // a lost port race must not leave its log behind
		if lastErr = s.start(); lastErr == nil {
			tb.Cleanup(s.Kill)
			return s
		}
		if !errors.Is(lastErr, errAddrInUse) {
			break
		}
	}
	tb.Fatalf("redistest: starting redis-server: %v", lastErr)
	return nil
}

// Start starts a standalone redis-server like Server, for code that has no
// testing.TB (TestMain, a benchmark server shared by several benchmarks). The
// caller must Kill it. It returns an error when redis-server is not on PATH;
// Restart on a server from Start panics instead of failing a test.
func Start(extraArgs ...string) (*Srv, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redistest: redis-server not on PATH (%s): %w", installHint, err)
	}
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	for attempt := 0; attempt < 3; attempt++ {
		port, perr := freePort(false)
		if perr != nil {
			err = perr
			break
		}
		s := &Srv{bin: bin, dir: dir, port: port, args: extraArgs, logPath: filepath.Join(dir, "redis.log")}
		_ = os.Remove(s.logPath)
		if err = s.start(); err == nil {
			s.ownDir = true // not before: a failed start kills, and must keep dir for the retry
			return s, nil
		}
		if !errors.Is(err, errAddrInUse) {
			break
		}
	}
	_ = os.RemoveAll(dir)
	return nil, fmt.Errorf("redistest: starting redis-server: %w", err)
}

// Addr returns the server's "127.0.0.1:port".
func (s *Srv) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the server's TCP port.
func (s *Srv) Port() int { return s.port }

// URL returns "redis://127.0.0.1:port/0", suitable for redis.ParseURL and
// REDIS_URL; "rediss://..." for a server from TLSServer.
func (s *Srv) URL() string {
	if s.tls != nil {
		return "rediss://" + s.Addr() + "/0"
	}
	return "redis://" + s.Addr() + "/0"
}

// Dir returns the server's working directory (a t.TempDir()).
func (s *Srv) Dir() string { return s.dir }

// Client returns a client for the server, closed by t.Cleanup. For a server
// from TLSServer it speaks TLS, verifies the server with the test's CA and
// presents the client certificate of TLS().
func (s *Srv) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), TLSConfig: s.clientTLS})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Kill sends SIGKILL to the server and waits for the process to exit, as a
// crash would: nothing is saved, clients see their connections reset. Kill on
// a server that is not running does nothing. A server from Start also has
// its directory removed.
func (s *Srv) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

func (s *Srv) killLocked() {
	if s.cmd == nil {
		return
	}
	// SIGKILL ends a stopped (frozen) process too.
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
	_ = s.logf.Close()
	s.cmd, s.exited, s.logf, s.frozen = nil, nil, nil, false
	if s.ownDir {
		_ = os.RemoveAll(s.dir)
	}
}

// Freeze stops the server with SIGSTOP, as a wedged Redis looks from the
// network: the port stays open and the kernel still completes TCP handshakes
// and buffers what clients send, but nothing is answered until Thaw. It is
// what a long-running command, a stalled host or a partition that drops
// replies does to clients, and what timeouts must survive.
//
// Freeze registers a t.Cleanup that thaws the server, so a test that fails
// midway never leaves a stopped process behind; because cleanups run last
// registered first, the thaw also comes before the cleanups the test
// registered earlier (shutting down what it tested, killing the server).
// Freeze on a server that is not running or already frozen does nothing.
func (s *Srv) Freeze() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.frozen {
		return
	}
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		if s.tb != nil {
			s.tb.Fatalf("redistest: freezing redis-server on %s: %v", s.Addr(), err)
		}
		panic(fmt.Sprintf("redistest: freezing redis-server on %s: %v", s.Addr(), err))
	}
	s.frozen = true
	if s.tb != nil {
		s.tb.Cleanup(s.Thaw)
	}
}

// Thaw resumes a server stopped by Freeze with SIGCONT; it answers what was
// sent meanwhile, in order. Thaw on a server that is not frozen does nothing.
func (s *Srv) Thaw() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || !s.frozen {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT)
	s.frozen = false
}

// Frozen reports whether the server is stopped by Freeze.
func (s *Srv) Frozen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.frozen
}

// Restart starts the server again on the same port and in the same directory,
// after killing it if it is still running, and waits until it answers PING.
// The data set is empty afterwards (persistence is disabled), as after a
// restart of a cache-only Redis. Restart fails the test when the server does
// not come back within StartTimeout.
func (s *Srv) Restart() {
	if s.tb == nil {
		panic("redistest: Restart of a server from Start")
	}
	s.tb.Helper()
	s.mu.Lock()
	s.killLocked()
	s.mu.Unlock()
	if err := s.start(); err != nil {
		s.tb.Fatalf("redistest: restarting redis-server on %s: %v", s.Addr(), err)
	}
}

// RestartLoading is Restart for a server with a data set to load (an RDB
// file in its directory, written by SAVE): it returns as soon as the server
// answers PING, with PONG or with its LOADING error, so that a test sees the
// load, not its end.
func (s *Srv) RestartLoading() {
	if s.tb == nil {
		panic("redistest: RestartLoading of a server from Start")
	}
	s.tb.Helper()
	s.mu.Lock()
	s.killLocked()
	s.loadingOK = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.loadingOK = false
		s.mu.Unlock()
	}()
	if err := s.start(); err != nil {
		s.tb.Fatalf("redistest: restarting redis-server on %s: %v", s.Addr(), err)
	}
}

// Log returns the server's log so far.
func (s *Srv) Log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// start launches the process and waits until it answers PING. On failure
// the process is killed and the error carries the tail of the log.
func (s *Srv) start() error {
	var args []string
	if s.conf != "" {
		// Sentinel needs its (writable) config file first: it records what it
		// learns there.
		args = append(args, s.conf, "--sentinel")
	}
	if s.tls != nil {
		args = append(args, s.tls.args(strconv.Itoa(s.port))...)
	} else {
		args = append(args, "--port", strconv.Itoa(s.port))
	}
	args = append(args,
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "no",
		"--dir", s.dir,
		"--logfile", "", // log to stdout, which goes to s.logPath
	)
	args = append(args, s.args...)
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening log %s: %w", s.logPath, err)
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("exec %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	// Owned by the Srv: killLocked waits for it.
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited, s.logf = cmd, exited, logf
	s.mu.Unlock()

	s.mu.Lock()
	loadingOK := s.loadingOK
	s.mu.Unlock()
	if err := waitReady(s.Addr(), s.clientTLS, exited, loadingOK); err != nil {
		s.Kill()
		tail := logTail(s.logPath, 20)
		if strings.Contains(tail, "Address already in use") {
			return fmt.Errorf("port %d: %w\n%s", s.port, errAddrInUse, tail)
		}
		return fmt.Errorf("%s on %s: %w; log tail:\n%s", s.bin, s.Addr(), err, tail)
	}
	return nil
}

// waitReady polls PING (over TLS with cfg, when not nil) until the server
// answers +PONG (or, with loadingOK, its LOADING error), the process exits
// or StartTimeout passes.
func waitReady(addr string, cfg *tls.Config, exited <-chan struct{}, loadingOK bool) error {
	deadline := time.Now().Add(StartTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("redis-server exited before answering PING")
		default:
		}
		if cfg != nil {
			lastErr = pingTLS(addr, cfg)
		} else {
			lastErr = ping(addr)
		}
		if lastErr == nil || loadingOK && strings.Contains(lastErr.Error(), "LOADING") {
			return nil
		}
		// Polling interval, not synchronisation: the deadline bounds the wait.
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("no PONG within %v: %w", StartTimeout, lastErr)
}

// ping sends one inline PING over a fresh connection.
func ping(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
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

// logTail returns the last n lines of the file at path.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// freePort returns a port that was free on 127.0.0.1 a moment ago. With
// clusterBus, port+10000 (the cluster bus port) was free as well.
func freePort(clusterBus bool) (int, error) {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		if !clusterBus {
			_ = l.Close()
			return port, nil
		}
		if port+10000 > 65535 {
			_ = l.Close()
			continue
		}
		bus, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		_ = l.Close()
		if err != nil {
			continue
		}
		_ = bus.Close()
		return port, nil
	}
	return 0, errors.New("no free port pair (port, port+10000) found in 50 attempts")
}

// requireBinary returns the path of name, or skips the test (fails it when
// CI is "true") when name is not on PATH.
func requireBinary(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("redistest: %s not on PATH and CI=true: %s", name, installHint)
	}
	tb.Skipf("redistest: %s not on PATH: %s", name, installHint)
	return ""
}
