package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proc is a child process whose output goes to a log file. Stop ends it by pid and
// waits for it; t.Cleanup calls Stop, so no test leaves a process behind.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed once cmd.Wait returned
	err     error         // cmd.Wait's result, valid after exited is closed
}

// startProc starts bin with args and env (nil: the test's own environment),
// writing its stdout and stderr to <dir>/<name>.log.
func startProc(t *testing.T, dir, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("%s: log file: %v", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("%s: starting %s: %v", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	// The one goroutine per process: it reaps the child; Stop and Wait await it.
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	t.Cleanup(func() { p.Stop(t) })
	return p
}

// Stop sends SIGTERM to the process (by pid), waits up to 10s for it to exit, then
// kills it and waits. It is a no-op on a process that already exited.
func (p *proc) Stop(t *testing.T) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return
	case <-time.After(10 * time.Second):
	}
	t.Logf("%s (pid %d) ignored SIGTERM for 10s: killing it", p.name, p.cmd.Process.Pid)
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Wait waits up to d for the process to exit on its own and returns its exit code.
func (p *proc) Wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		t.Fatalf("%s (pid %d) did not exit within %s\n%s", p.name, p.cmd.Process.Pid, d, p.Tail(40))
	}
	var exit *exec.ExitError
	if p.err != nil && !errors.As(p.err, &exit) {
		t.Fatalf("%s: %v", p.name, p.err)
	}
	return p.cmd.ProcessState.ExitCode()
}

// Exited reports whether the process has exited.
func (p *proc) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// Log returns what the process wrote so far.
func (p *proc) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// Tail returns the last n lines of the process's log, headed by its name, for
// failure messages.
func (p *proc) Tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return fmt.Sprintf("--- last %d lines of %s's log (%s) ---\n%s\n--- end of %s's log ---",
		len(lines), p.name, p.logPath, strings.Join(lines, "\n"), p.name)
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago. Another
// process may take it before ours binds it; starters retry on "address in use".
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// poll calls check every 100ms until it returns nil (poll returns nil), until
// gaveUp reports true, or until d passes; then it returns check's last error.
func poll(d time.Duration, gaveUp func() bool, check func() error) error {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", d, err)
		}
		if gaveUp != nil && gaveUp() {
			return fmt.Errorf("gave up: %w", err)
		}
		<-tick.C
	}
}

// eventually polls check for up to d and fails the test with its last error (and
// hint, when given) if it never returns nil.
func eventually(t *testing.T, d time.Duration, what string, check func() error, hint func() string) {
	t.Helper()
	if err := poll(d, nil, check); err != nil {
		msg := fmt.Sprintf("%s: %v", what, err)
		if hint != nil {
			msg += "\n" + hint()
		}
		t.Fatal(msg)
	}
}

// httpGet returns the status and body of GET url, with a short timeout so a
// hung server cannot outlast a deadline.
func httpGet(url string) (int, []byte, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes(), err
}

// dialable reports whether something accepts TCP connections on addr.
func dialable(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// buildGo runs `go build -C dir -o out pkg` and fails the test, with go's output,
// when it fails.
func buildGo(t *testing.T, dir, out, pkg string) {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not on PATH: %v", err)
	}
	start := time.Now()
	cmd := exec.Command(gobin, "build", "-C", dir, "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -C %s -o %s %s: %v\n%s", dir, out, pkg, err, b)
	}
	t.Logf("built %s in %s", pkg, time.Since(start).Round(100*time.Millisecond))
}
