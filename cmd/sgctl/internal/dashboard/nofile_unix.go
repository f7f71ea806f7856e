//go:build unix

package dashboard

import "syscall"

// nofile returns the process's descriptor limit (the soft RLIMIT_NOFILE,
// which the Go runtime raises to the hard limit at start), 0 when unknown.
func nofile() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return lim.Cur
}
