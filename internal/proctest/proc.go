package proctest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultTimeout is how long a wait lasts when Cmd.Timeout is zero.
const DefaultTimeout = 20 * time.Second

// pollInterval is how often WaitFor and WaitForMatch read the output.
const pollInterval = 10 * time.Millisecond

// tailLines is how much of the output a failure shows.
const tailLines = 60

// waitDelay bounds how long the reaper waits, once the process exited, for
// its stdout and stderr to close (a child of the child may hold them).
const waitDelay = 5 * time.Second

// inherited are the variables of the test's environment a child gets.
var inherited = []string{"PATH", "HOME", "TMPDIR", "GOCOVERDIR"}

// defaults are given to every child before Cmd.Env, which may change them:
// a lifecycle process's health server binds loopback, as every server a
// test starts must (its default is every interface).
var defaults = []string{"SG_HEALTH_HOST=127.0.0.1"}

// Cmd is a process to start.
type Cmd struct {
	Bin     string        // the program, as Build returns it
	Args    []string      // its arguments
	Env     []string      // its environment ("KEY=value"), beside what the package adds
	Name    string        // what messages call it; the base name of Bin when empty
	Timeout time.Duration // the deadline of each wait; DefaultTimeout when zero
}

// Proc is a started process. Its methods are safe to call from any
// goroutine; those taking a testing.TB fail the test and must be called from
// the test's goroutine.
type Proc struct {
	name    string
	timeout time.Duration
	cmd     *exec.Cmd
	out     *output
	done    chan struct{} // closed once the process was reaped and its output read
	err     error         // cmd.Wait's result, read after done

	mu    sync.Mutex
	shown int // the output's length when a failure last showed its tail
}

// Start starts c.Bin. The test's cleanup kills the process if it still runs,
// reaps it and, when the test failed, logs the tail of its output.
func Start(t testing.TB, c Cmd) *Proc {
	t.Helper()
	p := &Proc{name: c.Name, timeout: c.Timeout, out: &output{}, done: make(chan struct{})}
	if p.name == "" {
		p.name = filepath.Base(c.Bin)
	}
	if p.timeout <= 0 {
		p.timeout = DefaultTimeout
	}
	p.cmd = exec.Command(c.Bin, c.Args...)
	for _, k := range inherited {
		if v, ok := os.LookupEnv(k); ok {
			p.cmd.Env = append(p.cmd.Env, k+"="+v)
		}
	}
	p.cmd.Env = append(p.cmd.Env, defaults...)
	p.cmd.Env = append(p.cmd.Env, c.Env...) // exec keeps the last value of a key
	p.cmd.Stdout, p.cmd.Stderr = p.out.stream(0), p.out.stream(1)
	p.cmd.WaitDelay = waitDelay
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", p.name, err)
	}
	// The reaper, the one goroutine per process; the cleanup awaits it.
	go func() {
		p.err = p.cmd.Wait()
		p.out.flush()
		close(p.done)
	}()
	t.Cleanup(func() {
		running := !p.Exited()
		p.Kill()
		if !t.Failed() {
			return
		}
		how := "exited (" + p.cmd.ProcessState.String() + ")"
		if running {
			how = "was killed at the end of the test"
		}
		t.Logf("%s (pid %d) %s%s", p.name, p.PID(), how, p.tail(true))
	})
	return p
}

// Name returns what messages call the process (Cmd.Name).
func (p *Proc) Name() string { return p.name }

// PID returns the process id. A restart by exec keeps it.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Signal sends sig to the process. It returns os.ErrProcessDone once the
// process was reaped.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill kills the process if it still runs and waits until it is reaped.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Done is closed once the process has exited, was reaped and all its output
// is in.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether Done is closed.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output returns what the process wrote so far, stdout and stderr line by line.
func (p *Proc) Output() string { return p.out.all() }

// Stdout returns what the process wrote to its stdout so far.
func (p *Proc) Stdout() string { return p.out.streamText(0) }

// Stderr returns what the process wrote to its stderr so far.
func (p *Proc) Stderr() string { return p.out.streamText(1) }

// Tail returns the last n lines of Output.
func (p *Proc) Tail(n int) string {
	lines := strings.SplitAfter(p.Output(), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return strings.Join(lines[max(len(lines)-n, 0):], "")
}

// WaitFor waits until the output contains text. It fails the test when the
// process exits without writing it, or at the deadline.
func (p *Proc) WaitFor(t testing.TB, text string) {
	t.Helper()
	p.waitUntil(t, fmt.Sprintf("%q", text), func(out string) bool { return strings.Contains(out, text) })
}

// WaitForMatch waits until the output matches re and returns the first
// match's submatches (FindStringSubmatch). It fails the test when the process
// exits without writing a match, or at the deadline.
func (p *Proc) WaitForMatch(t testing.TB, re *regexp.Regexp) []string {
	t.Helper()
	var m []string
	p.waitUntil(t, "a match of `"+re.String()+"`", func(out string) bool {
		m = re.FindStringSubmatch(out)
		return m != nil
	})
	return m
}

func (p *Proc) waitUntil(t testing.TB, what string, found func(string) bool) {
	t.Helper()
	deadline := time.NewTimer(p.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for !found(p.Output()) {
		select {
		case <-p.done:
			if found(p.Output()) { // what it wrote last
				return
			}
			t.Fatalf("%s (pid %d) exited (%s) without writing %s%s", p.name, p.PID(), p.cmd.ProcessState, what, p.tail(false))
		case <-deadline.C:
			if found(p.Output()) {
				return
			}
			t.Fatalf("%s (pid %d) did not write %s within %v%s", p.name, p.PID(), what, p.timeout, p.tail(false))
		case <-tick.C:
		}
	}
}

// Wait waits until the process exits and returns its exit code (-1 when a
// signal ended it). It fails the test at the deadline.
func (p *Proc) Wait(t testing.TB) int {
	t.Helper()
	deadline := time.NewTimer(p.timeout)
	defer deadline.Stop()
	select {
	case <-p.done:
	case <-deadline.C:
		t.Fatalf("%s (pid %d) did not exit within %v%s", p.name, p.PID(), p.timeout, p.tail(false))
	}
	var ee *exec.ExitError
	if p.err != nil && !errors.As(p.err, &ee) {
		t.Fatalf("%s (pid %d): %v%s", p.name, p.PID(), p.err, p.tail(false))
	}
	return p.cmd.ProcessState.ExitCode()
}

// tail returns the last lines of the output for a message, headed by the
// process's name. At the cleanup it says so instead when a failure already
// showed the output as it is.
func (p *Proc) tail(cleanup bool) string {
	out := p.Output()
	p.mu.Lock()
	seen := p.shown == len(out) && p.shown > 0
	p.shown = len(out)
	p.mu.Unlock()
	if cleanup && seen {
		return "; its output ends as shown above"
	}
	if out == "" {
		return "; it wrote nothing"
	}
	lines := strings.Count(strings.TrimSuffix(out, "\n"), "\n") + 1
	n := min(lines, tailLines)
	return fmt.Sprintf("\n--- the last %d of %d lines of %s's output ---\n%s\n--- end of %s's output ---",
		n, lines, p.name, strings.TrimSuffix(p.Tail(n), "\n"), p.name)
}

// output is what a process wrote: each stream whole, and both together with
// a stream's line added when its newline arrives.
type output struct {
	mu      sync.Mutex
	lines   bytes.Buffer    // complete lines of both streams, in arrival order
	streams [2]bytes.Buffer // stdout, stderr
	partial [2][]byte       // each stream's unfinished last line
}

func (o *output) stream(i int) *streamWriter { return &streamWriter{o, i} }

type streamWriter struct {
	o *output
	i int
}

func (w *streamWriter) Write(b []byte) (int, error) {
	o := w.o
	o.mu.Lock()
	defer o.mu.Unlock()
	o.streams[w.i].Write(b)
	o.partial[w.i] = append(o.partial[w.i], b...)
	if j := bytes.LastIndexByte(o.partial[w.i], '\n'); j >= 0 {
		o.lines.Write(o.partial[w.i][:j+1])
		o.partial[w.i] = append([]byte(nil), o.partial[w.i][j+1:]...)
	}
	return len(b), nil
}

// flush adds the unfinished last lines, once the streams are closed.
func (o *output) flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lines.WriteString(o.pending())
	o.partial = [2][]byte{}
}

// pending returns the unfinished last lines, one per line.
func (o *output) pending() string {
	var s []string
	for _, p := range o.partial {
		if len(p) > 0 {
			s = append(s, string(p))
		}
	}
	return strings.Join(s, "\n")
}

func (o *output) all() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lines.String() + o.pending()
}

func (o *output) streamText(i int) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.streams[i].String()
}
