package sdnotifytest_test

import (
	"net"
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/stargazer/lifecycle/internal/sdnotifytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// send writes each message to the socket at path as one datagram, as a
// service does with NOTIFY_SOCKET.
func send(t *testing.T, path string, msgs ...string) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, m := range msgs {
		if _, err := c.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWaitForReturnsTheIndexOfTheFirstNotificationContainingIt(t *testing.T) {
	s := sdnotifytest.Listen(t)
	send(t, s.Path(), "STATUS=connecting", "READY=1\nSTATUS=running", "WATCHDOG=1")
	if i := s.WaitFor(t, "READY=1"); i != 1 {
		t.Errorf("WaitFor(READY=1) = %d, want 1", i)
	}
	if i := s.WaitFor(t, "STATUS="); i != 0 {
		t.Errorf("WaitFor(STATUS=) = %d, want 0, the first", i)
	}
	if i := s.Index("STOPPING=1"); i != -1 {
		t.Errorf("Index of what never arrived = %d, want -1", i)
	}
}

func TestSyncTakesInEverythingSentBeforeItAndLeavesNoMarker(t *testing.T) {
	s := sdnotifytest.Listen(t)
	want := []string{"STATUS=a", "STATUS=b", "WATCHDOG=1", "STATUS=c"}
	send(t, s.Path(), want...)
	s.Sync(t)
	if got := s.Messages(); !slices.Equal(got, want) {
		t.Fatalf("after Sync: %q, want %q", got, want)
	}
	all := s.All()
	for i := 1; i < len(all); i++ {
		if all[i].At.Before(all[i-1].At) {
			t.Errorf("notification %d arrived at %v, before the one ahead of it (%v)", i, all[i].At, all[i-1].At)
		}
	}
}

func TestCleanupRemovesTheSocket(t *testing.T) {
	var path string
	t.Run("listen", func(t *testing.T) {
		path = sdnotifytest.Listen(t).Path()
		send(t, path, "READY=1")
	})
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err == nil {
		c.Close()
		t.Fatalf("%s still accepts datagrams after the test's cleanup", path)
	}
}
