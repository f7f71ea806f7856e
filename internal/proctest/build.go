// Package proctest runs the project's programs as child processes in tests. It
// builds a program once per test binary, starts it with the environment the
// test names, collects what it writes, and ends it with the test.
//
//	func TestMain(m *testing.M) { goleak.VerifyTestMain(proctest.Main(m)) }
//
// and each test (examples/worker's):
//
//	func TestWorkerBootsAndStopsCleanlyOnSIGTERM(t *testing.T) {
//		worker := proctest.Build(t, proctest.Module+"/examples/worker")
//		p := proctest.Start(t, proctest.Cmd{Bin: worker, Env: []string{"SG_HEALTH_PORT=0"}})
//		p.WaitFor(t, "boot completed")
//		_ = p.Signal(syscall.SIGTERM)
//		if code := p.Wait(t); code != 0 {
//			t.Fatalf("exit code %d, want 0", code)
//		}
//	}
//
// Binaries: Build runs `go build` the first time a test asks for a package and
// hands every later test of the same test binary the same file. The files live in one
// temporary directory that Main removes once every test has run, so a test
// binary that builds runs its tests through Main; Build fails the test
// otherwise. (A test's t.TempDir would be removed when that test ends, while
// later tests still use the binary; a directory of its own per test would
// build the program again each time.)
//
// Environment: the child gets Cmd.Env and, of the test's own environment, only
// PATH, HOME, TMPDIR and GOCOVERDIR when they are set, and SG_HEALTH_HOST=127.0.0.1
// (a lifecycle process's health server binds loopback); Cmd.Env wins over them.
// Nothing else leaks in, so a developer's REDIS_URL or OTEL_* settings never
// reach a child.
//
// Output: stdout and stderr are kept apart (Stdout, Stderr) and together, line
// by line in the order the lines arrived (Output, Tail); a line is never cut
// by a line of the other stream.
//
// Waiting: WaitFor, WaitForMatch and Wait poll every 10ms up to the process's
// deadline (Cmd.Timeout, DefaultTimeout when zero). A wait for output fails as
// soon as the process exits without writing it, and every failure shows the
// tail of the output. Done and Exited answer without waiting.
//
// The end: t.Cleanup kills the process if it still runs, reaps it, and, when
// the test failed, logs the tail of its output (Kill does the first two
// earlier). No process or goroutine of this package outlives its test, and
// no directory the test binary (unless the binary itself is killed, as by
// -timeout).
package proctest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Module is the import path of the module whose programs Build builds.
const Module = "github.com/stargazer/lifecycle"

// TestingM is what TestMain receives and goleak.VerifyTestMain takes.
type TestingM interface{ Run() int }

// Main returns m with the binaries that Build made during m's tests removed
// once they have run. A removal that fails makes a passing run fail.
func Main(m TestingM) TestingM { return mainM{m} }

type mainM struct{ m TestingM }

func (w mainM) Run() int {
	binaries.open()
	code := w.m.Run()
	if err := binaries.close(); err != nil {
		fmt.Fprintf(os.Stderr, "proctest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Build returns the path of the program pkg, an import path in this module,
// built once per test binary from the module's own directory (so with the
// module's go.mod and go.sum, from a nested module's tests too).
func Build(t testing.TB, pkg string) string {
	t.Helper()
	if pkg != Module && !strings.HasPrefix(pkg, Module+"/") {
		t.Fatalf("proctest.Build(%q): not a package of %s (BuildIn builds other modules' programs)", pkg, Module)
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("proctest.Build(%q): %v", pkg, err)
	}
	return buildIn(t, root, pkg)
}

// BuildIn is Build for a program of another module: pkg is built with
// `go build -C dir`, dir relative to the test's directory.
func BuildIn(t testing.TB, dir, pkg string) string {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatalf("proctest.BuildIn(%q, %q): %v", dir, pkg, err)
	}
	return buildIn(t, abs, pkg)
}

func buildIn(t testing.TB, dir, pkg string) string {
	t.Helper()
	bin, took, err := binaries.build(dir, pkg)
	if err != nil {
		t.Fatal(err)
	}
	if took > 0 {
		t.Logf("proctest: built %s in %v", pkg, took.Round(100*time.Millisecond))
	}
	return bin
}

var binaries cache

// errNoMain is Build's answer outside Main.
var errNoMain = errors.New("proctest: Build needs the tests run through proctest.Main, which removes the binaries at the end: " +
	"func TestMain(m *testing.M) { goleak.VerifyTestMain(proctest.Main(m)) }")

// cache is the binaries of one test binary: one directory, one build per
// (directory, package).
type cache struct {
	mu     sync.Mutex
	active bool   // between open and close
	dir    string // made by the first build
	builds map[[2]string]*build
}

type build struct {
	once sync.Once
	path string
	err  error
}

func (c *cache) open() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.active = true
}

// close removes the directory and forgets the builds.
func (c *cache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.active = false
	dir := c.dir
	c.dir, c.builds = "", nil
	if dir == "" {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing the binaries: %w", err)
	}
	return nil
}

// build runs `go build -C dir -o <file> pkg` the first time it is asked for
// (dir, pkg), and returns the file and, to the caller that built it, how long
// the build took. Concurrent callers wait for the one build.
func (c *cache) build(dir, pkg string) (bin string, took time.Duration, err error) {
	c.mu.Lock()
	if !c.active {
		c.mu.Unlock()
		return "", 0, errNoMain
	}
	if c.dir == "" {
		d, err := os.MkdirTemp("", "proctest-")
		if err != nil {
			c.mu.Unlock()
			return "", 0, fmt.Errorf("proctest: %w", err)
		}
		c.dir, c.builds = d, map[[2]string]*build{}
	}
	b, ok := c.builds[[2]string{dir, pkg}]
	if !ok {
		b = &build{path: filepath.Join(c.dir, strconv.Itoa(len(c.builds)), path.Base(pkg))}
		c.builds[[2]string{dir, pkg}] = b
	}
	c.mu.Unlock()
	b.once.Do(func() {
		start := time.Now()
		out, err := exec.Command("go", "build", "-C", dir, "-o", b.path, pkg).CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build -C %s -o %s %s: %v\n%s", dir, b.path, pkg, err, out)
			return
		}
		took = time.Since(start)
	})
	return b.path, took, b.err
}

var root struct {
	once sync.Once
	dir  string
	err  error
}

// moduleRoot returns the directory of Module as the go command in the test's
// directory resolves it: the module itself, or what a nested module's
// replace directive points at.
func moduleRoot() (string, error) {
	root.once.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", Module).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				err = fmt.Errorf("%w: %s", err, ee.Stderr)
			}
			root.err = fmt.Errorf("go list -m %s: %w", Module, err)
			return
		}
		root.dir = strings.TrimSpace(string(out))
	})
	return root.dir, root.err
}
