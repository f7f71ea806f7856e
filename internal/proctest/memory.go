package proctest

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"testing"
)

// Memory is a process's resident memory as the kernel counts it
// (/proc/<pid>/status), in bytes: what it holds now (VmRSS) and the most it
// has held (VmHWM), since its start or since the last ResetPeak.
type Memory struct {
	RSS, Peak int64
}

// Memory reads the process's resident memory. It fails the test when the
// process has exited or /proc cannot be read (a system without procfs).
func (p *Proc) Memory(t testing.TB) Memory {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID()))
	if err != nil {
		t.Fatalf("%s: reading its memory: %v", p.name, err)
	}
	var m Memory
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(k) {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.Peak
		default:
			continue
		}
		kb, err := strconv.ParseInt(string(bytes.TrimSuffix(bytes.TrimSpace(v), []byte(" kB"))), 10, 64)
		if err != nil {
			t.Fatalf("%s: /proc status line %q: %v", p.name, sc.Text(), err)
		}
		*dst = kb << 10
	}
	if m.RSS == 0 || m.Peak == 0 {
		t.Fatalf("%s: no VmRSS or VmHWM in /proc/%d/status", p.name, p.PID())
	}
	return m
}

// ResetPeak makes the process's peak resident memory (Memory.Peak) its
// current one (echo 5 > /proc/<pid>/clear_refs), so that the next Memory
// reports the peak of what happened in between. It fails the test where the
// kernel refuses.
func (p *Proc) ResetPeak(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.PID()), []byte("5"), 0); err != nil {
		t.Fatalf("%s: resetting its peak memory: %v", p.name, err)
	}
}

// MiB formats bytes as mebibytes, for test logs.
func MiB(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB" }
