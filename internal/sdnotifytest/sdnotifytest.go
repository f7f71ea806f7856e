// Package sdnotifytest stands in for systemd's notification socket in tests.
// Listen binds a unix datagram socket, as systemd does for a Type=notify
// unit, and collects what arrives on it (READY=1, STATUS=..., WATCHDOG=1,
// STOPPING=1), each with when it arrived. The test points NOTIFY_SOCKET at
// Path: in its own environment for an Instance in the test process, in a
// child's for a process.
//
// Datagrams on a unix socket arrive in the order they were sent; Sync uses
// that to take in everything sent before it. The socket, its directory and
// its reader goroutine are gone when the test's cleanup has run; when the
// test failed the cleanup logs every notification with its time.
package sdnotifytest

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultTimeout is how long WaitFor and Sync wait unless Socket.Timeout
// says otherwise.
const DefaultTimeout = 10 * time.Second

// syncMarker is the datagram Sync sends itself; it never stays in the list.
const syncMarker = "TEST-SYNC"

// Notification is one datagram systemd would have received, and when.
type Notification struct {
	Msg string
	At  time.Time
}

// Socket is a listening notification socket. Its methods are safe for
// concurrent use; set Timeout before using it.
type Socket struct {
	// Timeout bounds WaitFor and Sync (DefaultTimeout from Listen).
	Timeout time.Duration

	path    string
	conn    *net.UnixConn
	mu      sync.Mutex
	got     []Notification
	arrived chan struct{} // signalled on every datagram
	done    chan struct{} // closed when the reader has returned
}

// Listen binds a socket in a new temporary directory (not t.TempDir: a unix
// socket's path must stay short) and reads it until the test's cleanup.
func Listen(t testing.TB) *Socket {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	s := &Socket{Timeout: DefaultTimeout, path: path, conn: conn, arrived: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got = append(s.got, Notification{string(buf[:n]), time.Now()})
			s.mu.Unlock()
			select {
			case s.arrived <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-s.done
		os.RemoveAll(dir)
		if t.Failed() {
			for _, n := range s.All() {
				t.Logf("%s %q", n.At.Format("15:04:05.000"), n.Msg)
			}
		}
	})
	return s
}

// Path is the socket's path, the value for NOTIFY_SOCKET.
func (s *Socket) Path() string { return s.path }

// Arrived is signalled (without blocking the reader: one signal may stand
// for several datagrams) when a datagram has been added to the list.
func (s *Socket) Arrived() <-chan struct{} { return s.arrived }

// All returns the notifications so far, in the order they arrived.
func (s *Socket) All() []Notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Notification(nil), s.got...)
}

// Messages returns the texts of the notifications so far, in order.
func (s *Socket) Messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.got))
	for i, n := range s.got {
		out[i] = n.Msg
	}
	return out
}

// Index returns the position of the first notification containing sub, or -1.
func (s *Socket) Index(sub string) int {
	for i, m := range s.Messages() {
		if strings.Contains(m, sub) {
			return i
		}
	}
	return -1
}

// WaitFor waits until a notification containing sub arrived and returns its
// index; it fails the test after Timeout.
func (s *Socket) WaitFor(t testing.TB, sub string) int {
	t.Helper()
	deadline := time.After(s.Timeout)
	for {
		if i := s.Index(sub); i >= 0 {
			return i
		}
		select {
		case <-s.arrived:
		case <-deadline:
			t.Fatalf("no notification with %q; got %q", sub, s.Messages())
		}
	}
}

// Sync returns once every datagram sent to the socket before the call has
// been read: it sends a marker of its own and waits for it (datagrams on a
// unix socket arrive in order). The marker is then dropped.
func (s *Socket) Sync(t testing.TB) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, s.conn.LocalAddr().(*net.UnixAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(syncMarker)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(s.Timeout)
	for {
		s.mu.Lock()
		for i, n := range s.got {
			if n.Msg == syncMarker {
				s.got = append(s.got[:i], s.got[i+1:]...)
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the sync marker never arrived")
		}
		select {
		case <-s.arrived:
		case <-time.After(10 * time.Millisecond): // polling, bounded by the deadline
		}
	}
}
