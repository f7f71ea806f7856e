package fleettest

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(settled{m}) }

// settled runs the tests, then gives go-redis's redial goroutines the second
// they need to exit: a pool that failed to dial a killed master redials on a
// goroutine that sleeps 1s between attempts and sees its client closed only
// when it wakes, later than goleak stops looking.
type settled struct{ m *testing.M }

func (s settled) Run() int {
	code := s.m.Run()
	deadline := time.Now().Add(5 * time.Second)
	for redialing() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // polling interval, bounded by the deadline
	}
	return code
}

func redialing() bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), "ConnPool).tryDial")
}
