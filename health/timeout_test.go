package health

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// startServing starts a server on loopback with opts and returns its address.
func startServing(t *testing.T, opts ...Option) string {
	t.Helper()
	s := newServer(t, newSource("running", time.Now()), append([]Option{WithAddr("127.0.0.1:0")}, opts...)...)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s.Addr()
}

// get sends one keep-alive GET on conn and reads the whole response.
func get(t *testing.T, conn net.Conn, br *bufio.Reader, path string) {
	t.Helper()
	if _, err := io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: health\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Close {
		t.Fatalf("GET %s: the server asked to close the connection: the test needs keep-alive", path)
	}
}

// closedByServer waits up to limit for the server to close conn and returns
// how long that took; it fails the test if the connection is still open.
func closedByServer(t *testing.T, conn net.Conn, br *bufio.Reader, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(limit))
	_, err := br.ReadByte()
	took := time.Since(start)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		t.Fatalf("connection still open after %v", limit)
	case err == nil:
		t.Fatal("the server sent unrequested bytes")
	}
	return took
}

func TestIdleKeepAliveConnectionIsClosed(t *testing.T) {
	addr := startServing(t, WithIdleTimeout(300*time.Millisecond))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	// Two requests on one connection: it is kept alive between requests.
	get(t, conn, br, "/livez")
	get(t, conn, br, "/healthz")
	took := closedByServer(t, conn, br, 10*time.Second)
	t.Logf("idle connection closed after %v (idle timeout 300ms)", took)
}

func TestDefaultIdleTimeoutIsAtMostAMinute(t *testing.T) {
	s, err := New(newSource("running", time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if d := s.cfg.idleTimeout; d <= 0 || d > time.Minute {
		t.Errorf("default idle timeout %v, want (0, 1m]", d)
	}
	if d := s.cfg.readTimeout; d <= 0 || d > time.Minute {
		t.Errorf("default read timeout %v, want (0, 1m]", d)
	}
}

func TestConnectionThatNeverFinishesItsRequestIsClosed(t *testing.T) {
	addr := startServing(t, WithReadTimeout(300*time.Millisecond))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Headers begun, never ended.
	if _, err := io.WriteString(conn, "GET /livez HTTP/1.1\r\nHost: health\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(10 * time.Second))
	_, err = io.Copy(io.Discard, br) // a 408, or nothing, then EOF
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("half-sent request still open after 10s")
	}
	t.Logf("half-sent request closed after %v (read timeout 300ms)", time.Since(start))
}
