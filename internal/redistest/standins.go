package redistest

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Stand-ins for a Redis that is not there, or does not answer, with no
// redis-server: RefusedAddr and Silent.

// RefusedAddr returns a loopback address that refuses connections: a port
// that was free a moment ago, its listener closed.
func RefusedAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// SilentSrv accepts TCP connections on loopback, counts them and never
// answers: a Redis that hangs, or a test's proof that nothing connected.
type SilentSrv struct {
	ln net.Listener
	n  atomic.Int64
	wg sync.WaitGroup
}

// Silent starts a SilentSrv. Its listener and the connections it holds are
// closed, and its goroutine awaited, by tb.Cleanup.
func Silent(tb testing.TB) *SilentSrv {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &SilentSrv{ln: ln}
	s.wg.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				_ = c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.n.Add(1)
			conns = append(conns, c)
		}
	})
	tb.Cleanup(func() {
		_ = ln.Close()
		s.wg.Wait()
	})
	return s
}

// Addr returns the server's "127.0.0.1:port".
func (s *SilentSrv) Addr() string { return s.ln.Addr().String() }

// Accepted returns how many connections the server has accepted.
func (s *SilentSrv) Accepted() int { return int(s.n.Load()) }
