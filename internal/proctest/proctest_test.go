package proctest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(Main(m)) }

const childPkg = Module + "/internal/proctest/testdata/child"

// child returns the test program (testdata/child), built once.
func child(t *testing.T) string {
	t.Helper()
	return Build(t, childPkg)
}

// fakeT stands for a test in a call the harness makes fail: it records the
// failure and the logs, and keeps the cleanups for the test to run.
type fakeT struct {
	testing.TB // the real test, for the rest
	failed     bool

	mu       sync.Mutex
	fatal    string
	logs     []string
	cleanups []func()
}

func newFakeT(t *testing.T) *fakeT {
	f := &fakeT{TB: t}
	t.Cleanup(f.runCleanups) // what the test did not run itself
	return f
}

func (f *fakeT) Helper() {}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeT) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }

func (f *fakeT) Logf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
}

func (f *fakeT) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

func (f *fakeT) Failed() bool { return f.failed }

func (f *fakeT) runCleanups() {
	f.mu.Lock()
	fns := f.cleanups
	f.cleanups = nil
	f.mu.Unlock()
	for _, fn := range slices.Backward(fns) {
		fn()
	}
}

// run calls fn in a goroutine of its own, as a test runs, so that a Fatalf
// ends fn alone, and returns the failure's message ("" when none).
func (f *fakeT) run(fn func()) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fatal
}

func TestBuildBuildsAPackageOnceAndCloseRemovesIt(t *testing.T) {
	dir, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	var c cache
	c.open()
	var (
		mu     sync.Mutex
		builds int
		paths  = make([]string, 4)
		errs   = make([]error, 4)
		wg     sync.WaitGroup
	)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var took time.Duration
			paths[i], took, errs[i] = c.build(dir, childPkg)
			if took > 0 {
				mu.Lock()
				builds++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Fatalf("build %d: %q %v, want %q", i, paths[i], errs[i], paths[0])
		}
	}
	if builds != 1 {
		t.Errorf("%d builds for four callers, want 1", builds)
	}
	if filepath.Base(paths[0]) != "child" {
		t.Errorf("binary %s, want it named after the package", paths[0])
	}
	if fi, err := os.Stat(paths[0]); err != nil || fi.Mode()&0o100 == 0 {
		t.Fatalf("the binary: %v %v", fi, err)
	}
	tmp := c.dir
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after close: stat %s: %v, want it gone", tmp, err)
	}
	if _, _, err := c.build(dir, childPkg); err != errNoMain {
		t.Errorf("a build after close: %v, want %v", err, errNoMain)
	}
}

func TestBuildOutsideMainFailsNamingMain(t *testing.T) {
	var c cache
	_, _, err := c.build(".", childPkg)
	if err == nil || !strings.Contains(err.Error(), "proctest.Main(m)") {
		t.Fatalf("err %v, want one naming proctest.Main", err)
	}
	if c.dir != "" {
		t.Errorf("a directory %s was made", c.dir)
	}
}

func TestAFailedBuildShowsTheGoCommandsOutput(t *testing.T) {
	f := newFakeT(t)
	msg := f.run(func() { Build(f, Module+"/internal/proctest/testdata/nothing") })
	if !strings.Contains(msg, "go build") || !strings.Contains(msg, "testdata/nothing") {
		t.Errorf("failure %q, want the command and go's complaint", msg)
	}
	f = newFakeT(t)
	msg = f.run(func() { Build(f, "example.com/other/cmd") })
	if !strings.Contains(msg, "not a package of "+Module) {
		t.Errorf("a package of another module: %q, want it refused", msg)
	}
}

func TestTheChildGetsItsEnvironmentLoopbackHealthAndOfTheTestsOnlyPATHHOMETMPDIRAndGOCOVERDIR(t *testing.T) {
	bin := child(t)
	t.Setenv("PATH", os.Getenv("PATH"))
	t.Setenv("HOME", "/home/of-the-test")
	t.Setenv("TMPDIR", os.TempDir())
	t.Setenv("GOCOVERDIR", t.TempDir())
	t.Setenv("REDIS_URL", "redis://the-developers-own:6379")
	env := func(extra ...string) []string {
		p := Start(t, Cmd{Bin: bin, Args: []string{"env"}, Env: append([]string{"A=1", "HOME=/home/of-the-child"}, extra...)})
		if code := p.Wait(t); code != 0 {
			t.Fatalf("exit code %d", code)
		}
		var got []string
		for line := range strings.Lines(p.Stdout()) {
			got = append(got, strings.TrimSuffix(strings.TrimPrefix(line, "env "), "\n"))
		}
		return got
	}
	want := []string{"A=1", "GOCOVERDIR=" + os.Getenv("GOCOVERDIR"), "HOME=/home/of-the-child", "PATH=" + os.Getenv("PATH"), "SG_HEALTH_HOST=127.0.0.1", "TMPDIR=" + os.TempDir()}
	if got := env(); !slices.Equal(got, want) {
		t.Errorf("environment\n%q, want\n%q", got, want)
	}
	if got := env("SG_HEALTH_HOST=::1"); !slices.Contains(got, "SG_HEALTH_HOST=::1") || slices.Contains(got, "SG_HEALTH_HOST=127.0.0.1") {
		t.Errorf("Cmd.Env's SG_HEALTH_HOST does not replace the default: %q", got)
	}
	os.Unsetenv("GOCOVERDIR") // t.Setenv restores it
	want = slices.DeleteFunc(want, func(kv string) bool { return strings.HasPrefix(kv, "GOCOVERDIR=") })
	if got := env(); !slices.Equal(got, want) {
		t.Errorf("with GOCOVERDIR unset: environment\n%q, want\n%q", got, want)
	}
}

func TestOutputKeepsTheStreamsApartAndTogetherWithWholeLines(t *testing.T) {
	p := Start(t, Cmd{Bin: child(t), Args: []string{"interleave:50", "partial:no newline"}})
	if code := p.Wait(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	long := strings.Repeat("e", 100000)
	var short []string
	for i := range 50 {
		short = append(short, fmt.Sprintf("short line %d\n", i))
	}
	if got, want := p.Stdout(), strings.Join(short, "")+"no newline"; got != want {
		t.Errorf("stdout has %d bytes, want %d: the short lines and the partial one", len(got), len(want))
	}
	if got, want := p.Stderr(), strings.Repeat(long+"\n", 50); got != want {
		t.Errorf("stderr has %d bytes, want %d: the long lines", len(got), len(want))
	}
	lines := strings.Split(p.Output(), "\n")
	var nshort, nlong int
	for i, l := range lines {
		switch {
		case l == long:
			nlong++
		case strings.HasPrefix(l, "short line ") && len(l) < 20:
			nshort++
		case l == "no newline" && i == len(lines)-1:
		default:
			t.Fatalf("line %d of the output is neither a whole line of stdout nor one of stderr: %d bytes, %.40q...", i, len(l), l)
		}
	}
	if nshort != 50 || nlong != 50 {
		t.Errorf("%d short and %d long lines in the output, want 50 and 50", nshort, nlong)
	}
	if got := p.Tail(1); got != "no newline" {
		t.Errorf("Tail(1) = %.40q, want the unfinished last line", got)
	}
}

func TestWaitForSignalAndWait(t *testing.T) {
	p := Start(t, Cmd{Bin: child(t), Args: []string{"pid", "err:listening on 127.0.0.1:4242", "wait", "exit:3"}})
	p.WaitFor(t, fmt.Sprintf("pid %d\n", p.PID()))
	if p.Name() != "child" {
		t.Errorf("Name() = %q, want the program's base name", p.Name())
	}
	if m := p.WaitForMatch(t, regexp.MustCompile(`listening on (\S+)`)); len(m) != 2 || m[1] != "127.0.0.1:4242" {
		t.Fatalf("WaitForMatch = %q, want the address as the first submatch", m)
	}
	if p.Exited() {
		t.Fatal("Exited before the signal")
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.Wait(t); code != 3 {
		t.Fatalf("exit code %d, want 3", code)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Wait")
	}
	if !p.Exited() || !strings.HasSuffix(p.Output(), "got SIGTERM\n") {
		t.Errorf("Exited %v, output %q", p.Exited(), p.Output())
	}
	if err := p.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Signal after the exit: %v, want os.ErrProcessDone", err)
	}
	// Lines of one stream keep their order; across the two, the order they arrived in.
	if got := p.Tail(1); got != "got SIGTERM\n" {
		t.Errorf("Tail(1) = %q", got)
	}
	if got := p.Tail(5); got != p.Output() || strings.Count(got, "\n") != 3 {
		t.Errorf("Tail(5) = %q, want the whole output, 3 lines", got)
	}
}

func TestWaitForFailsAsSoonAsTheProcessExitsWithoutWritingIt(t *testing.T) {
	p := Start(t, Cmd{Bin: child(t), Args: []string{"err:boom", "exit:4"}})
	start := time.Now()
	f := newFakeT(t)
	msg := f.run(func() { p.WaitFor(f, "never") })
	if took := time.Since(start); took > DefaultTimeout/4 {
		t.Errorf("failed after %v: it waited for the deadline (%v)", took, DefaultTimeout)
	}
	for _, want := range []string{`child (pid `, `exited (exit status 4) without writing "never"`, "the last 1 of 1 lines of child's output", "boom"} {
		if !strings.Contains(msg, want) {
			t.Errorf("failure %q lacks %q", msg, want)
		}
	}
	f = newFakeT(t)
	msg = f.run(func() { p.WaitForMatch(f, regexp.MustCompile(`nev(er)`)) })
	if !strings.Contains(msg, "without writing a match of `nev(er)`") {
		t.Errorf("WaitForMatch's failure %q does not name the expression", msg)
	}
}

func TestWaitsFailAtTheDeadlineShowingTheOutput(t *testing.T) {
	// Long enough for the first wait to see the line on a loaded machine.
	p := Start(t, Cmd{Bin: child(t), Args: []string{"ignore", "out:stubborn", "hang"}, Name: "mule", Timeout: time.Second})
	p.WaitFor(t, "stubborn")
	if p.Name() != "mule" {
		t.Errorf("Name() = %q, want Cmd.Name", p.Name())
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	f := newFakeT(t)
	if msg := f.run(func() { p.WaitFor(f, "never") }); !strings.Contains(msg, `mule (pid `) || !strings.Contains(msg, `did not write "never" within 1s`) || !strings.Contains(msg, "stubborn") {
		t.Errorf("WaitFor's failure: %q", msg)
	}
	f = newFakeT(t)
	if msg := f.run(func() { p.Wait(f) }); !strings.Contains(msg, "did not exit within 1s") || !strings.Contains(msg, "stubborn") {
		t.Errorf("Wait's failure: %q", msg)
	}
	if p.Exited() {
		t.Error("the process ended although it ignores SIGTERM")
	}
}

func TestTheCleanupKillsReapsAndLogsTheTailOfAFailedTest(t *testing.T) {
	bin := child(t)
	f := newFakeT(t)
	f.failed = true
	p := Start(f, Cmd{Bin: bin, Args: []string{"ignore", "out:one", "out:two", "hang"}})
	p.WaitFor(t, "two")
	f.runCleanups()
	if !p.Exited() {
		t.Fatal("the process runs on after the cleanup")
	}
	if code := p.Wait(t); code != -1 {
		t.Errorf("exit code %d, want -1 (killed)", code)
	}
	log := strings.Join(f.logs, "\n")
	for _, want := range []string{fmt.Sprintf("child (pid %d) was killed at the end of the test", p.PID()), "the last 2 of 2 lines", "one\ntwo\n--- end"} {
		if !strings.Contains(log, want) {
			t.Errorf("log %q lacks %q", log, want)
		}
	}

	// After a failure that showed the output, the cleanup does not repeat it.
	f = newFakeT(t)
	f.failed = true
	q := Start(f, Cmd{Bin: bin, Args: []string{"out:bye", "exit:1"}})
	if msg := f.run(func() { q.WaitFor(f, "never") }); !strings.Contains(msg, "bye") {
		t.Fatalf("failure %q", msg)
	}
	f.runCleanups()
	if log := strings.Join(f.logs, "\n"); !strings.Contains(log, "exited (exit status 1); its output ends as shown above") || strings.Contains(log, "bye") {
		t.Errorf("log %q, want the exit and no second copy of the output", log)
	}
}

func TestTheCleanupOfAPassingTestKillsQuietly(t *testing.T) {
	f := newFakeT(t)
	p := Start(f, Cmd{Bin: child(t), Args: []string{"out:hello", "hang"}})
	p.WaitFor(t, "hello")
	f.runCleanups()
	if !p.Exited() || len(f.logs) != 0 {
		t.Errorf("exited %v, logs %q; want killed and nothing logged", p.Exited(), f.logs)
	}
}

func TestAProgramThatCannotStartFailsTheTest(t *testing.T) {
	f := newFakeT(t)
	if msg := f.run(func() { Start(f, Cmd{Bin: filepath.Join(t.TempDir(), "missing")}) }); !strings.Contains(msg, "starting missing") {
		t.Errorf("failure %q", msg)
	}
}

// Memory reads the child's resident memory, and ResetPeak brings its peak
// back down to it after a spike the child has freed.
func TestMemoryAndResetPeak(t *testing.T) {
	p := Start(t, Cmd{Bin: child(t), Args: []string{"alloc:64", "out:spiked", "hang"}})
	p.WaitFor(t, "spiked")
	m := p.Memory(t)
	if m.Peak < 64<<20 || m.RSS > m.Peak {
		t.Fatalf("memory %+v after holding 64 MiB: want a peak of at least 64 MiB", m)
	}
	p.ResetPeak(t)
	if after := p.Memory(t); after.Peak > m.RSS+(8<<20) {
		t.Fatalf("peak %s after the reset, RSS %s before it", MiB(after.Peak), MiB(m.RSS))
	}
	t.Logf("before the reset %s RSS, %s peak; after %+v", MiB(m.RSS), MiB(m.Peak), p.Memory(t))
}
