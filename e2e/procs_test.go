package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stargazer/lifecycle/internal/proctest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(proctest.Main(m)) }

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
